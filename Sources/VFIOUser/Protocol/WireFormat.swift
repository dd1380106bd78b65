/// Little-endian reading of a message payload that never reads past its end: every
/// field a client sends goes through here, so a short or lying message is a typed
/// error, not a trap.
struct WireReader {
    private let bytes: [UInt8]
    private(set) var position: Int

    init(_ bytes: [UInt8], from position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var remaining: Int { bytes.count - position }

    mutating func u8() throws(VFIOUserError) -> UInt8 { try integer() }
    mutating func u16() throws(VFIOUserError) -> UInt16 { try integer() }
    mutating func u32() throws(VFIOUserError) -> UInt32 { try integer() }
    mutating func u64() throws(VFIOUserError) -> UInt64 { try integer() }

    private mutating func integer<T: FixedWidthInteger>() throws(VFIOUserError) -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw .malformed("payload ends inside a field") }
        var v: T = 0
        for i in 0 ..< n { v |= T(bytes[position + i]) << (8 * i) }
        position += n
        return v
    }

    /// The next `count` bytes.
    mutating func bytes(_ count: Int) throws(VFIOUserError) -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else { throw .malformed("payload shorter than the length it declares") }
        defer { position += count }
        return bytes[position ..< position + count]
    }

    /// Everything not read yet.
    mutating func rest() -> ArraySlice<UInt8> {
        defer { position = bytes.count }
        return bytes[position...]
    }
}

/// Little-endian building of a reply payload.
struct WireWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u16(_ v: UInt16) { integer(v) }
    mutating func u32(_ v: UInt32) { integer(v) }
    mutating func u64(_ v: UInt64) { integer(v) }
    mutating func append<S: Sequence>(_ s: S) where S.Element == UInt8 { bytes.append(contentsOf: s) }

    private mutating func integer<T: FixedWidthInteger>(_ v: T) {
        for i in 0 ..< MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }
}
