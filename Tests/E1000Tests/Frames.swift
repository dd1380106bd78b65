/// Frame builders and a deliberately naive Internet checksum (RFC 1071, word by word),
/// independent of VMMNet's, to check what the device produced.
enum Frames {
    static let nicMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    static let peerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]
    static let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    static func be16(_ v: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
    static func read16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) << 8 | Int(b[o + 1]) }
    static func read32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3]) }

    static func naiveSum(_ bytes: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i])
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            sum += hi << 8 | lo
            while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
            i += 2
        }
        return sum
    }

    static func naiveChecksum(_ bytes: [UInt8]) -> Int { Int(~naiveSum(bytes) & 0xFFFF) }

    static func ethernet(dst: [UInt8] = nicMAC, src: [UInt8] = peerMAC, type: Int, _ payload: [UInt8]) -> [UInt8] {
        dst + src + be16(type) + payload
    }

    static func payload(_ n: Int, seed: Int = 0) -> [UInt8] { (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }

    static let ip4src: [UInt8] = [10, 0, 0, 1], ip4dst: [UInt8] = [10, 0, 0, 2]
    static let ip6src: [UInt8] = [0xFD] + [UInt8](repeating: 0, count: 14) + [1]
    static let ip6dst: [UInt8] = [0xFD] + [UInt8](repeating: 0, count: 14) + [2]

    static func tcpHeader(seq: UInt32, flags: UInt8, checksum: Int = 0) -> [UInt8] {
        be16(40000) + be16(80) + be32(seq) + be32(0) + [0x50, flags] + be16(65535) + be16(checksum) + be16(0)
    }

    /// A complete, correctly checksummed IPv4/TCP frame.
    static func ipv4TCP(_ data: [UInt8], seq: UInt32 = 1000, flags: UInt8 = 0x18, id: Int = 0x1234, dst: [UInt8] = nicMAC) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0] + be16(20 + 20 + data.count) + be16(id) + [0x40, 0, 64, 6] + [0, 0] + ip4src + ip4dst
        let c = naiveChecksum(ip); ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xFF)
        var tcp = tcpHeader(seq: seq, flags: flags) + data
        let pseudo = ip4src + ip4dst + [0, 6] + be16(tcp.count)
        let t = naiveChecksum(pseudo + tcp); tcp[16] = UInt8(t >> 8); tcp[17] = UInt8(t & 0xFF)
        return ethernet(dst: dst, type: 0x0800, ip + tcp)
    }

    /// A complete, correctly checksummed IPv6/TCP frame.
    static func ipv6TCP(_ data: [UInt8], seq: UInt32 = 1000, flags: UInt8 = 0x18) -> [UInt8] {
        let ip: [UInt8] = [0x60, 0, 0, 0] + be16(20 + data.count) + [6, 64] + ip6src + ip6dst
        var tcp = tcpHeader(seq: seq, flags: flags) + data
        let pseudo = ip6src + ip6dst + [0, 0] + be16(tcp.count) + [0, 0, 0, 6]
        let t = naiveChecksum(pseudo + tcp); tcp[16] = UInt8(t >> 8); tcp[17] = UInt8(t & 0xFF)
        return ethernet(type: 0x86DD, ip + tcp)
    }

    static func ipv4UDP(_ data: [UInt8]) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0] + be16(20 + 8 + data.count) + be16(1) + [0x40, 0, 64, 17] + [0, 0] + ip4src + ip4dst
        let c = naiveChecksum(ip); ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xFF)
        var udp = be16(5000) + be16(6000) + be16(8 + data.count) + be16(0) + data
        let t = naiveChecksum(ip4src + ip4dst + [0, 17] + be16(udp.count) + udp)
        udp[6] = UInt8(t >> 8); udp[7] = UInt8(t & 0xFF)
        return ethernet(type: 0x0800, ip + udp)
    }

    // MARK: Verification

    static func ipv4HeaderValid(_ f: [UInt8], at o: Int = 14) -> Bool {
        let ihl = Int(f[o] & 0xF) * 4
        return naiveSum(Array(f[o ..< o + ihl])) == 0xFFFF
    }

    static func tcpValidIPv4(_ f: [UInt8], at o: Int = 14) -> Bool {
        let ihl = Int(f[o] & 0xF) * 4
        let total = read16(f, o + 2)
        let l4 = Array(f[o + ihl ..< o + total])
        let pseudo = Array(f[o + 12 ..< o + 20]) + [0, f[o + 9]] + be16(l4.count)
        return naiveSum(pseudo + l4) == 0xFFFF
    }

    static func tcpValidIPv6(_ f: [UInt8], at o: Int = 14) -> Bool {
        let plen = read16(f, o + 4)
        let l4 = Array(f[o + 40 ..< o + 40 + plen])
        let pseudo = Array(f[o + 8 ..< o + 40]) + [0, 0] + be16(l4.count) + [0, 0, 0, f[o + 6]]
        return naiveSum(pseudo + l4) == 0xFFFF
    }

    /// IEEE 802.3 CRC-32, bit by bit.
    static func naiveCRC(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0 ..< 8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
