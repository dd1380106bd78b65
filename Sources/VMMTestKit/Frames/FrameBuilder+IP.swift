extension FrameBuilder {
    /// An IPv4 header (RFC 791 §3.1): version 4, TOS 0, DF set, TTL 64, `options` (a
    /// multiple of 4 bytes) after the addresses, header checksum filled in.
    public func ipv4Header(payloadLength: Int, proto: UInt8, id: UInt16 = 0x1234, options: [UInt8] = []) -> [UInt8] {
        let length = 20 + options.count
        var h: [UInt8] = [UInt8(0x40 | length / 4), 0] + [UInt8](be16: UInt16(length + payloadLength)) + [UInt8](be16: id)
            + [0x40, 0, 64, proto, 0, 0] + sourceIPv4 + destinationIPv4 + options
        h.put16(NaiveChecksum.checksum(h), at: 10)
        return h
    }

    /// An IPv6 header (RFC 8200 §3): traffic class and flow label 0, hop limit 64.
    public func ipv6Header(payloadLength: Int, next: UInt8) -> [UInt8] {
        [0x60, 0, 0, 0] + [UInt8](be16: UInt16(payloadLength)) + [next, 64] + sourceIPv6 + destinationIPv6
    }

    /// An IPv4 packet (header and `payload`) in an Ethernet frame.
    public func ipv4(proto: UInt8, id: UInt16 = 0x1234, payload: [UInt8]) -> [UInt8] {
        ethernet(type: 0x0800, payload: ipv4Header(payloadLength: payload.count, proto: proto, id: id) + payload)
    }

    /// The pseudo-header TCP and UDP checksums cover: for 4-byte addresses RFC 9293 §3.1
    /// (source, destination, zero, protocol, 16-bit length); for 16-byte ones RFC 8200 §8.1
    /// (source, destination, 32-bit length, three zero bytes, next header).
    static func pseudoHeader(source: [UInt8], destination: [UInt8], proto: UInt8, length: Int) -> [UInt8] {
        if source.count == 4 { return source + destination + [0, proto] + [UInt8](be16: UInt16(truncatingIfNeeded: length)) }
        return source + destination + [UInt8](be32: UInt32(length)) + [0, 0, 0, proto]
    }
}
