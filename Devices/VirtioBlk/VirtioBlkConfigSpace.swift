/// `struct virtio_blk_config` (virtio 1.2 §5.2.4), as Linux 6.1 reads it: 60 bytes up to
/// `unused1` (the secure-erase fields after it are not offered). Offsets checked against
/// the Linux 6.1 uapi header with offsetof.
struct VirtioBlkConfigSpace {
    static let length = 60
    /// Capacity in 512-byte sectors.
    var capacity: UInt64
    var segMax: UInt32
    var blockSize: UInt32
    var physicalBlockExponent: UInt8
    var writeback: UInt8
    var queueCount: UInt16
    var maxDiscardSectors: UInt32
    var maxDiscardSegments: UInt32
    var discardSectorAlignment: UInt32
    var maxWriteZeroesSectors: UInt32
    var maxWriteZeroesSegments: UInt32
    var writeZeroesMayUnmap: UInt8

    /// Offsets of the fields a driver writes or the device reads back.
    enum Offset {
        static let writeback = 32
    }

    /// The little-endian image of the structure; fields are read at any offset and width
    /// (Linux reads the 64-bit capacity as two 32-bit halves, §2.5 config_generation).
    var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: VirtioBlkConfigSpace.length)
        func put<T: FixedWidthInteger>(_ v: T, at offset: Int) {
            for i in 0 ..< MemoryLayout<T>.size { b[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        put(capacity, at: 0)
        put(UInt32(0), at: 8)          // size_max: not offered
        put(segMax, at: 12)
        put(UInt32(0), at: 16)         // geometry: not offered (Linux then reports 64 heads/32 sectors)
        put(blockSize, at: 20)
        put(physicalBlockExponent, at: 24)
        put(UInt8(0), at: 25)          // alignment_offset
        put(UInt16(1), at: 26)         // min_io_size, in logical blocks
        put(UInt32(0), at: 28)         // opt_io_size: no hint
        put(writeback, at: Offset.writeback)
        put(queueCount, at: 34)
        put(maxDiscardSectors, at: 36)
        put(maxDiscardSegments, at: 40)
        put(discardSectorAlignment, at: 44)
        put(maxWriteZeroesSectors, at: 48)
        put(maxWriteZeroesSegments, at: 52)
        put(writeZeroesMayUnmap, at: 56)
        return b
    }

    func read(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, size > 0, size <= 8, offset <= VirtioBlkConfigSpace.length - size else { return 0 }
        let b = bytes
        var v: UInt64 = 0
        for i in 0 ..< size { v |= UInt64(b[offset + i]) << (8 * UInt64(i)) }
        return v
    }
}
