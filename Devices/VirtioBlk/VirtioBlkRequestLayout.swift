import VMMCore

/// `struct virtio_blk_outhdr` (virtio 1.2 §5.2.6): the 16 device-readable bytes that open
/// every request. `ioprio` (the spec's `reserved`) is ignored: Linux 6.1 fills it with
/// the request's I/O priority.
struct VirtioBlkRequestHeader {
    static let size = 16
    var type: UInt32
    var sector: UInt64

    init(_ bytes: UnsafeRawBufferPointer) {
        type = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        sector = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }
}

/// Request types (§5.2.6; Linux's VIRTIO_BLK_T_*).
enum VirtioBlkRequestType: UInt32 {
    case read = 0            // VIRTIO_BLK_T_IN
    case write = 1           // VIRTIO_BLK_T_OUT
    case flush = 4
    /// VIRTIO_BLK_T_FLUSH_OUT, legacy: the spec says to treat it as FLUSH.
    case legacyFlushOut = 5
    case getID = 8
    case discard = 11
    case writeZeroes = 13
}

/// The status byte, the last byte the device writes (§5.2.6).
enum VirtioBlkStatus: UInt8 {
    case ok = 0
    /// Linux maps anything but OK and UNSUPP to BLK_STS_IOERR (virtblk_result).
    case ioError = 1
    /// BLK_STS_NOTSUPP in Linux.
    case unsupported = 2
}

/// `struct virtio_blk_discard_write_zeroes` (§5.2.6): one range of a DISCARD or
/// WRITE_ZEROES request, 16 bytes.
struct VirtioBlkRange {
    static let size = 16
    /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP; bits 1…31 are reserved.
    static let unmapFlag: UInt32 = 1
    var sector: UInt64
    var sectorCount: UInt32
    var flags: UInt32

    init(_ bytes: [UInt8]) {
        func le<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            var v: T = 0
            for i in 0 ..< MemoryLayout<T>.size { v |= T(bytes[offset + i]) << (8 * i) }
            return v
        }
        sector = le(0, UInt64.self)
        sectorCount = le(8, UInt32.self)
        flags = le(12, UInt32.self)
    }
}

/// Sectors in the protocol are always 512 bytes, whatever `blk_size` says (§5.2.5).
let virtioBlkSectorSize: UInt64 = 512
/// GET_ID answers with 20 bytes (VIRTIO_BLK_ID_BYTES), NUL-padded.
let virtioBlkIDBytes = 20
