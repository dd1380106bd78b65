// Big-endian (network byte order, RFC 791 "Appendix B") field access on frame bytes.
//
// Every accessor checks its offset against the buffer and answers nil / false instead of
// trapping: frames come from guests and backends and are never trusted.

extension UnsafeRawBufferPointer {
    @inlinable @inline(__always) public func byte(at offset: Int) -> UInt8? {
        guard offset >= 0, offset < count else { return nil }
        return self[offset]
    }

    @inlinable @inline(__always) public func be16(at offset: Int) -> UInt16? {
        guard offset >= 0, offset <= count - 2 else { return nil }
        return UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always) public func be32(at offset: Int) -> UInt32? {
        guard offset >= 0, offset <= count - 4 else { return nil }
        return UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// `self[start ..< start+length]` as its own buffer, or nil when any part lies outside.
    @inlinable @inline(__always) func slice(_ start: Int, length: Int) -> UnsafeRawBufferPointer? {
        guard start >= 0, length >= 0, start <= count, length <= count - start else { return nil }
        return UnsafeRawBufferPointer(rebasing: self[start ..< start + length])
    }
}

extension UnsafeMutableRawBufferPointer {
    @discardableResult @inlinable
    func storeBE16(_ value: UInt16, at offset: Int) -> Bool {
        guard offset >= 0, offset <= count - 2 else { return false }
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
        return true
    }

    @discardableResult @inlinable
    func storeBE32(_ value: UInt32, at offset: Int) -> Bool {
        guard offset >= 0, offset <= count - 4 else { return false }
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
        return true
    }

    /// `self[start ..< start+length]` as its own buffer, or nil when any part lies outside.
    @inlinable @inline(__always) func slice(_ start: Int, length: Int) -> UnsafeMutableRawBufferPointer? {
        guard start >= 0, length >= 0, start <= count, length <= count - start else { return nil }
        return UnsafeMutableRawBufferPointer(rebasing: self[start ..< start + length])
    }
}
