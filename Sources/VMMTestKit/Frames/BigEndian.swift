/// Network byte order (big-endian, RFC 1700 "Data Notations") for building and inspecting
/// frames as plain byte arrays.
extension Array where Element == UInt8 {
    /// The two bytes of `value`, most significant first.
    public init(be16 value: UInt16) { self = [UInt8(value >> 8), UInt8(value & 0xFF)] }

    /// The four bytes of `value`, most significant first.
    public init(be32 value: UInt32) { self = [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)] }

    /// The big-endian 16-bit value at `offset`.
    public func be16(_ offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }

    /// The big-endian 32-bit value at `offset`.
    public func be32(_ offset: Int) -> UInt32 { UInt32(be16(offset)) << 16 | UInt32(be16(offset + 2)) }

    /// Stores `value` big-endian at `offset`.
    public mutating func put16(_ value: UInt16, at offset: Int) { self[offset] = UInt8(value >> 8); self[offset + 1] = UInt8(value & 0xFF) }

    /// Stores `value` big-endian at `offset`.
    public mutating func put32(_ value: UInt32, at offset: Int) { put16(UInt16(value >> 16), at: offset); put16(UInt16(value & 0xFFFF), at: offset + 2) }
}
