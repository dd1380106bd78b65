/// Frames for the tests, built and checked without the code under test: an RFC 1071
/// checksum written out longhand, IPv4/IPv6 TCP and UDP builders.
enum TestFrames {
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    static let peerMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC]

    static func ethernet(dst: [UInt8] = guestMAC, src: [UInt8] = peerMAC, type: UInt16 = 0x88B5, payload: [UInt8]) -> [UInt8] {
        dst + src + be16(type) + payload
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    /// The 16-bit ones'-complement sum, folded (RFC 1071 §4.1's loop).
    static func onesSum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return UInt16(sum)
    }

    static func checksum(_ bytes: [UInt8]) -> UInt16 { ~onesSum(bytes) }

    static let srcIP: [UInt8] = [10, 0, 2, 15], dstIP: [UInt8] = [10, 0, 2, 2]
    static let srcIP6: [UInt8] = [0xFE, 0x80] + [UInt8](repeating: 0, count: 13) + [1]
    static let dstIP6: [UInt8] = [0xFE, 0x80] + [UInt8](repeating: 0, count: 13) + [2]

    /// A TCP header (20 bytes, no options) with checksum 0.
    static func tcpHeader(seq: UInt32, flags: UInt8) -> [UInt8] {
        be16(40000) + be16(5201) + be32(seq) + be32(1) + [0x50, flags] + be16(65535) + [0, 0] + [0, 0]
    }

    static func pseudoIPv4(proto: UInt8, length: Int) -> [UInt8] { srcIP + dstIP + [0, proto] + be16(UInt16(length)) }
    static func pseudoIPv6(proto: UInt8, length: Int) -> [UInt8] { srcIP6 + dstIP6 + be32(UInt32(length)) + [0, 0, 0, proto] }

    static func ipv4Header(payloadLength: Int, id: UInt16, proto: UInt8) -> [UInt8] {
        var h: [UInt8] = [0x45, 0] + be16(UInt16(20 + payloadLength)) + be16(id) + [0x40, 0, 64, proto, 0, 0] + srcIP + dstIP
        let c = checksum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xFF)
        return h
    }

    static func ipv6Header(payloadLength: Int, next: UInt8) -> [UInt8] {
        [0x60, 0, 0, 0] + be16(UInt16(payloadLength)) + [next, 64] + srcIP6 + dstIP6
    }

    /// A complete IPv4/TCP frame with correct checksums.
    static func tcp4(payload: [UInt8], seq: UInt32 = 1000, flags: UInt8 = 0x18, id: UInt16 = 7, dst: [UInt8] = guestMAC) -> [UInt8] {
        var tcp = tcpHeader(seq: seq, flags: flags) + payload
        let c = checksum(pseudoIPv4(proto: 6, length: tcp.count) + tcp)
        tcp[16] = UInt8(c >> 8); tcp[17] = UInt8(c & 0xFF)
        return dst + peerMAC + be16(0x0800) + ipv4Header(payloadLength: tcp.count, id: id, proto: 6) + tcp
    }

    static func tcp6(payload: [UInt8], seq: UInt32 = 1000, flags: UInt8 = 0x18, dst: [UInt8] = guestMAC) -> [UInt8] {
        var tcp = tcpHeader(seq: seq, flags: flags) + payload
        let c = checksum(pseudoIPv6(proto: 6, length: tcp.count) + tcp)
        tcp[16] = UInt8(c >> 8); tcp[17] = UInt8(c & 0xFF)
        return dst + peerMAC + be16(0x86DD) + ipv6Header(payloadLength: tcp.count, next: 6) + tcp
    }

    static func udp4(payload: [UInt8], dst: [UInt8] = guestMAC) -> [UInt8] {
        var udp = be16(5353) + be16(5353) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        var c = checksum(pseudoIPv4(proto: 17, length: udp.count) + udp)
        if c == 0 { c = 0xFFFF }
        udp[6] = UInt8(c >> 8); udp[7] = UInt8(c & 0xFF)
        return dst + peerMAC + be16(0x0800) + ipv4Header(payloadLength: udp.count, id: 9, proto: 17) + udp
    }

    /// What a driver sends for NEEDS_CSUM: the transport checksum field holds the
    /// pseudo-header sum (not complemented), as Linux's CHECKSUM_PARTIAL leaves it.
    static func withPartialChecksum(_ frame: [UInt8], l4: Int, field: Int, pseudo: [UInt8]) -> [UInt8] {
        var f = frame
        let s = onesSum(pseudo)
        f[l4 + field] = UInt8(s >> 8); f[l4 + field + 1] = UInt8(s & 0xFF)
        return f
    }

    /// Whether the TCP/UDP checksum of an IPv4 (or IPv6) frame verifies.
    static func transportChecksumValid(_ frame: [UInt8]) -> Bool {
        let type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        if type == 0x0800 {
            let ihl = Int(frame[14] & 0x0F) * 4
            let total = Int(frame[16]) << 8 | Int(frame[17])
            let proto = frame[23]
            let l4 = Array(frame[(14 + ihl) ..< (14 + total)])
            return onesSum(Array(frame[14 ..< 14 + ihl])) == 0xFFFF
                && onesSum(pseudoIPv4(proto: proto, length: l4.count) + l4) == 0xFFFF
        }
        let plen = Int(frame[18]) << 8 | Int(frame[19])
        let l4 = Array(frame[54 ..< 54 + plen])
        return onesSum(pseudoIPv6(proto: frame[20], length: l4.count) + l4) == 0xFFFF
    }

    static func payload(_ n: Int, seed: Int = 0) -> [UInt8] { (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }
}
