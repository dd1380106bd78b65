// Builds well-formed Ethernet frames for tests, checksums done with `Naive`.
enum TestFrames {
    static let dst: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    static let src: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF]
    static let ip4Src: [UInt8] = [10, 0, 2, 15], ip4Dst: [UInt8] = [10, 0, 2, 2]
    static let ip6Src: [UInt8] = [0xFE, 0x80] + [UInt8](repeating: 0, count: 12) + [0x12, 0x34]
    static let ip6Dst: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [0x01]

    static func ethernet(_ etherType: UInt16, vlan: UInt16? = nil) -> [UInt8] {
        var f = dst + src
        if let tci = vlan { f += [0x81, 0x00, UInt8(tci >> 8), UInt8(tci & 0xFF)] }
        return f + [UInt8(etherType >> 8), UInt8(etherType & 0xFF)]
    }

    static func ipv4Header(payloadLength: Int, proto: UInt8, id: UInt16 = 0x1234, options: [UInt8] = []) -> [UInt8] {
        let ihl = (20 + options.count) / 4
        var h: [UInt8] = [UInt8(0x40 | ihl), 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0] + ip4Src + ip4Dst + options
        h.put16(UInt16(h.count + payloadLength), at: 2)
        h.put16(id, at: 4)
        h.put16(Naive.checksum(h), at: 10)
        return h
    }

    static func ipv6Header(payloadLength: Int, next: UInt8) -> [UInt8] {
        var h: [UInt8] = [0x60, 0, 0, 0, 0, 0, next, 64] + ip6Src + ip6Dst
        h.put16(UInt16(payloadLength), at: 4)
        return h
    }

    static let fin: UInt8 = 0x01, syn: UInt8 = 0x02, psh: UInt8 = 0x08, ack: UInt8 = 0x10, cwr: UInt8 = 0x80

    static func tcpHeader(seq: UInt32, flags: UInt8, options: [UInt8] = []) -> [UInt8] {
        var h: [UInt8] = [0x30, 0x39, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 1, UInt8(((20 + options.count) / 4) << 4), flags, 0xFF, 0xFF, 0, 0, 0, 0] + options
        h.put32(seq, at: 4)
        return h
    }

    static func payload(_ n: Int, seed: UInt64 = 7) -> [UInt8] {
        var r = TestRandom(seed: seed)
        return r.bytes(n)
    }

    /// A TCP frame with valid checksums. `ipv6Extensions` are (next header, bytes) pairs
    /// inserted before TCP.
    static func tcp(ipv6: Bool = false, vlan: UInt16? = nil, seq: UInt32 = 1000, flags: UInt8 = ack | psh,
                    payload body: [UInt8], tcpOptions: [UInt8] = [], ipOptions: [UInt8] = [], id: UInt16 = 0x1234) -> [UInt8] {
        let tcp = tcpHeader(seq: seq, flags: flags, options: tcpOptions) + body
        return finish(ipv6: ipv6, vlan: vlan, transport: tcp, proto: 6, checksumAt: 16, ipOptions: ipOptions, id: id)
    }

    static func udp(ipv6: Bool = false, vlan: UInt16? = nil, payload body: [UInt8]) -> [UInt8] {
        var udp: [UInt8] = [0x13, 0x88, 0x00, 0x35, 0, 0, 0, 0] + body
        udp.put16(UInt16(udp.count), at: 4)
        return finish(ipv6: ipv6, vlan: vlan, transport: udp, proto: 17, checksumAt: 6, ipOptions: [], id: 0x1234)
    }

    static func finish(ipv6: Bool, vlan: UInt16?, transport: [UInt8], proto: UInt8, checksumAt: Int, ipOptions: [UInt8], id: UInt16) -> [UInt8] {
        let eth = ethernet(ipv6 ? 0x86DD : 0x0800, vlan: vlan)
        let ip = ipv6 ? ipv6Header(payloadLength: transport.count, next: proto)
                      : ipv4Header(payloadLength: transport.count, proto: proto, id: id, options: ipOptions)
        var frame = eth + ip + transport
        let l4 = eth.count + ip.count
        var c = Naive.checksum(pseudo(frame, ip: eth.count, proto: proto, length: transport.count) + transport)
        if proto == 17, c == 0 { c = 0xFFFF }
        frame.put16(c, at: l4 + checksumAt)
        return frame
    }

    static func pseudo(_ frame: [UInt8], ip: Int, proto: UInt8, length n: Int) -> [UInt8] {
        if frame[ip] >> 4 == 4 {
            return Array(frame[ip + 12 ..< ip + 20]) + [0, proto, UInt8(n >> 8), UInt8(n & 0xFF)]
        }
        return Array(frame[ip + 8 ..< ip + 40]) + [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), 0, 0, 0, proto]
    }

    /// The sum of the pseudo-header alone (what a driver leaves in the field for NEEDS_CSUM).
    static func pseudoSum(_ frame: [UInt8], ip: Int, proto: UInt8, length: Int) -> UInt16 {
        Naive.sum(pseudo(frame, ip: ip, proto: proto, length: length))
    }
}
