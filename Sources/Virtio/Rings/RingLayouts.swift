/// The structures driver and device share in guest memory, as named layouts (all
/// little-endian, virtio 1.2 §2.4). Loaded and stored field by field from host views of
/// guest RAM: the guest may rewrite them at any time, so each load is a snapshot that the
/// ring code checks before use.

/// Flags of a descriptor, split (§2.7.5) or packed (§2.8.1, which adds AVAIL and USED).
public struct VirtqDescriptorFlags: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// VIRTQ_DESC_F_NEXT: the chain continues (split: at `next`; packed: in the next slot).
    public static let next = VirtqDescriptorFlags(rawValue: 1)
    /// VIRTQ_DESC_F_WRITE: the device writes this buffer.
    public static let write = VirtqDescriptorFlags(rawValue: 2)
    /// VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors.
    public static let indirect = VirtqDescriptorFlags(rawValue: 4)
    /// VIRTQ_DESC_F_AVAIL / VIRTQ_DESC_F_USED (packed rings, §2.8.1).
    public static let avail = VirtqDescriptorFlags(rawValue: 1 << 7)
    public static let used = VirtqDescriptorFlags(rawValue: 1 << 15)
}

/// `struct virtq_desc` (§2.7.5): 16 bytes.
public struct VirtqDescriptor: Sendable {
    public static let size = 16
    public var address: UInt64
    public var length: UInt32
    public var flags: VirtqDescriptorFlags
    public var next: UInt16

    /// Descriptor `index` of `table`; the caller has checked `index` against the table.
    /// Always inlined, as the ring accessors below: four loads each, where the call cost
    /// as much again on every receive (callgrind).
    @inline(__always)
    static func load(_ table: UnsafeMutableRawBufferPointer, index: Int) -> VirtqDescriptor {
        let base = index &* size
        return VirtqDescriptor(address: UInt64(littleEndian: table.loadUnaligned(fromByteOffset: base, as: UInt64.self)),
                               length: UInt32(littleEndian: table.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self)),
                               flags: VirtqDescriptorFlags(rawValue: ringLoad16(table, base + 12)),
                               next: ringLoad16(table, base + 14))
    }
}

/// `struct pvirtq_desc` (§2.8.13): the packed ring's 16-byte element. The buffer ID
/// comes before the flags, unlike the split layout.
public struct VirtqPackedDescriptor: Sendable {
    public static let size = 16
    public var address: UInt64
    public var length: UInt32
    public var id: UInt16
    public var flags: VirtqDescriptorFlags

    @inline(__always)
    static func load(_ ring: UnsafeMutableRawBufferPointer, index: Int) -> VirtqPackedDescriptor {
        let base = index &* size
        return VirtqPackedDescriptor(address: UInt64(littleEndian: ring.loadUnaligned(fromByteOffset: base, as: UInt64.self)),
                                     length: UInt32(littleEndian: ring.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self)),
                                     id: ringLoad16(ring, base + 12),
                                     flags: loadFlags(ring, index: index))
    }

    static func loadFlags(_ ring: UnsafeMutableRawBufferPointer, index: Int) -> VirtqDescriptorFlags {
        VirtqDescriptorFlags(rawValue: ringLoad16(ring, index &* size + 14))
    }

    /// Writes a used element in place (§2.8.21.3): length and ID now, flags separately
    /// (`storeFlags`), after a barrier, so the driver sees a complete element.
    static func storeUsed(_ ring: UnsafeMutableRawBufferPointer, index: Int, id: UInt16, length: UInt32) {
        let base = index &* size
        ring.storeBytes(of: length.littleEndian, toByteOffset: base + 8, as: UInt32.self)
        ringStore16(ring, base + 12, id)
    }

    static func storeFlags(_ ring: UnsafeMutableRawBufferPointer, index: Int, _ flags: VirtqDescriptorFlags) {
        ringStore16(ring, index &* size + 14, flags.rawValue)
    }
}

/// `struct virtq_avail` (§2.7.6): flags, idx, ring[size], then `used_event` with EVENT_IDX.
struct VirtqAvailRing {
    static let noInterrupt: UInt16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
    let memory: UnsafeMutableRawBufferPointer
    let size: UInt16
    static func length(size: UInt16) -> UInt64 { 6 + 2 * UInt64(size) }

    var flags: UInt16 { ringLoad16(memory, 0) }
    var index: UInt16 { ringLoad16(memory, 2) }
    /// The head at `slot` (already reduced modulo the size).
    @inline(__always) func head(at slot: UInt16) -> UInt16 { ringLoad16(memory, 4 + 2 * Int(slot)) }
    /// `used_event` (§2.7.10).
    var usedEvent: UInt16 { ringLoad16(memory, 4 + 2 * Int(size)) }
}

/// `struct virtq_used` (§2.7.8): flags, idx, ring of `virtq_used_elem {le32 id; le32 len}`,
/// then `avail_event` with EVENT_IDX.
struct VirtqUsedRing {
    static let noNotify: UInt16 = 1 // VIRTQ_USED_F_NO_NOTIFY
    static let elementSize = 8
    let memory: UnsafeMutableRawBufferPointer
    let size: UInt16
    static func length(size: UInt16) -> UInt64 { 6 + UInt64(elementSize) * UInt64(size) }

    func setFlags(_ flags: UInt16) { ringStore16(memory, 0, flags) }
    func setIndex(_ index: UInt16) { ringStore16(memory, 2, index) }
    /// Writes `virtq_used_elem` at `slot` (already reduced modulo the size).
    func store(slot: UInt16, id: UInt32, length: UInt32) {
        let base = 4 + VirtqUsedRing.elementSize * Int(slot)
        memory.storeBytes(of: id.littleEndian, toByteOffset: base, as: UInt32.self)
        memory.storeBytes(of: length.littleEndian, toByteOffset: base + 4, as: UInt32.self)
    }
    /// `avail_event` (§2.7.10).
    func setAvailEvent(_ index: UInt16) { ringStore16(memory, 4 + VirtqUsedRing.elementSize * Int(size), index) }
}

/// `struct pvirtq_event_suppress` (§2.8.14): `desc` (offset and wrap bit) and `flags`.
struct VirtqEventSuppression {
    enum Mode: UInt16 { case enable = 0, disable = 1, descriptor = 2 }
    let memory: UnsafeMutableRawBufferPointer
    static let length: UInt64 = 4

    /// The ring position and wrap counter the other side asked about (bit 15: wrap).
    var descriptor: (offset: UInt16, wrap: Bool) {
        let v = ringLoad16(memory, 0)
        return (v & 0x7FFF, v & 0x8000 != 0)
    }
    /// The reserved value 3 is taken as "enable": an extra interrupt is harmless, a lost one
    /// hangs the driver.
    var mode: Mode { Mode(rawValue: ringLoad16(memory, 2) & 3) ?? .enable }

    func set(_ mode: Mode, offset: UInt16 = 0, wrap: Bool = false) {
        if mode == .descriptor { ringStore16(memory, 0, offset | (wrap ? 0x8000 : 0)) }
        ringStore16(memory, 2, mode.rawValue)
    }
}

/// Ring fields are little-endian in virtio 1.x (§2.4), whatever the host's byte order.
///
/// The 16-bit fields (indices, event indices, flags) are read and written as one access,
/// because the driver moves them while the device reads. The generic `loadUnaligned` is,
/// in a debug build, a 2-byte `memcpy`, which glibc does as a byte load and then a word
/// load: Linux's virtio_net moving `avail->idx` from 0x7AFB to 0x7B0x in between was read
/// as 0x7BFB, a jump of 256, and the device set DEVICE_NEEDS_RESET
/// (`RingFieldTearingTests`). A typed access through the pointer is one load or store at
/// any optimisation level; `mapRing` checked the ring's alignment in guest memory, which
/// host memory keeps (regions are mapped at page boundaries, vfio-user's checked to be
/// page-aligned). The offsets come from indices already reduced modulo the queue size.
@inline(__always)
func ringLoad16(_ ring: UnsafeMutableRawBufferPointer, _ offset: Int) -> UInt16 {
    // Callers index within the area (indices reduced modulo the queue size, `next` checked
    // against the table); a field outside it reads as 0 rather than trapping.
    guard offset >= 0, offset <= ring.count - 2, let base = ring.baseAddress else { return 0 }
    return UInt16(littleEndian: (base + offset).assumingMemoryBound(to: UInt16.self).pointee)
}

@inline(__always)
func ringStore16(_ ring: UnsafeMutableRawBufferPointer, _ offset: Int, _ value: UInt16) {
    guard offset >= 0, offset <= ring.count - 2, let base = ring.baseAddress else { return }
    (base + offset).assumingMemoryBound(to: UInt16.self).pointee = value.littleEndian
}
