/// `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6): offload metadata in front of a frame.
/// The same 12-byte layout travels between virtio-net and TAP (IFF_VNET_HDR with
/// TUNSETVNETHDRSZ 12), so it passes through without translation.
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 12
    public static let needsChecksum: UInt8 = 1       // VIRTIO_NET_HDR_F_NEEDS_CSUM
    public static let dataValid: UInt8 = 2           // VIRTIO_NET_HDR_F_DATA_VALID

    public enum GSOType: UInt8, Sendable {
        case none = 0, tcpv4 = 1, udp = 3, tcpv6 = 4
    }
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0
    public var numBuffers: UInt16 = 0

    @inlinable
    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, numBuffers: UInt16 = 0) {
        self.flags = flags; self.gsoType = gsoType; self.headerLength = headerLength; self.gsoSize = gsoSize
        self.checksumStart = checksumStart; self.checksumOffset = checksumOffset; self.numBuffers = numBuffers
    }

    /// Parses the first 12 bytes (little-endian, as virtio 1.x requires); nil if too short.
    /// Inlinable, as the other members here: a device parses or writes one per frame.
    @inlinable
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= VirtioNetHeader.size else { return nil }
        // Checked above: 12 bytes, loaded without per-byte bounds checks (once per frame).
        func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        self.init(flags: bytes.loadUnaligned(fromByteOffset: 0, as: UInt8.self),
                  gsoType: bytes.loadUnaligned(fromByteOffset: 1, as: UInt8.self), headerLength: u16(2), gsoSize: u16(4),
                  checksumStart: u16(6), checksumOffset: u16(8), numBuffers: u16(10))
    }

    /// Writes the 12 bytes into `out` (which must hold at least 12). Always inlined, and as
    /// two stores of the little-endian words the fields make (written per received frame):
    /// the struct travels in two registers in this very layout, so the words are those
    /// registers, where seven stores had them taken apart field by field.
    @inlinable @inline(__always)
    public func write(to out: UnsafeMutableRawBufferPointer) {
        guard out.count >= VirtioNetHeader.size else { return }
        let low = UInt64(flags) | UInt64(gsoType) << 8 | UInt64(headerLength) << 16 | UInt64(gsoSize) << 32
            | UInt64(checksumStart) << 48
        let high = UInt32(checksumOffset) | UInt32(numBuffers) << 16
        out.storeBytes(of: low.littleEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: high.littleEndian, toByteOffset: 8, as: UInt32.self)
    }

    @inlinable public var isGSO: Bool { gsoType & ~VirtioNetHeader.gsoECN != 0 }
}
