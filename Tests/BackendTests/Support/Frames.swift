/// Raw frames a fake guest sends, and accessors for what comes back. Built by hand on
/// purpose: the tests check the backends against the real kernel/libslirp, not our parsers.
enum Frames {
    static let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    static func ip(_ text: String) -> [UInt8] { text.split(separator: ".").map { UInt8($0)! } }

    static func ethernet(dst: [UInt8], src: [UInt8], type: UInt16, payload: [UInt8]) -> [UInt8] {
        dst + src + be16(type) + payload
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    /// RFC 1071 one's-complement sum, folded (not complemented).
    static func sum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
        var s = initial
        var i = 0
        while i + 1 < bytes.count { s += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { s += UInt32(bytes[i]) << 8 }
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return UInt16(s)
    }

    static func checksum(_ bytes: [UInt8]) -> UInt16 { ~sum(bytes) }

    static func arpRequest(srcMAC: [UInt8], srcIP: [UInt8], targetIP: [UInt8]) -> [UInt8] {
        let arp: [UInt8] = be16(1) + be16(0x0800) + [6, 4] + be16(1) + srcMAC + srcIP + [0, 0, 0, 0, 0, 0] + targetIP
        return ethernet(dst: broadcast, src: srcMAC, type: 0x0806, payload: arp)
    }

    static func arpReply(srcMAC: [UInt8], srcIP: [UInt8], dstMAC: [UInt8], dstIP: [UInt8]) -> [UInt8] {
        let arp: [UInt8] = be16(1) + be16(0x0800) + [6, 4] + be16(2) + srcMAC + srcIP + dstMAC + dstIP
        return ethernet(dst: dstMAC, src: srcMAC, type: 0x0806, payload: arp)
    }

    static func ipv4(src: [UInt8], dst: [UInt8], proto: UInt8, payload: [UInt8], id: UInt16 = 1) -> [UInt8] {
        var h: [UInt8] = [0x45, 0] + be16(UInt16(20 + payload.count)) + be16(id) + [0x40, 0, 64, proto, 0, 0] + src + dst
        let c = checksum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xFF)
        return h + payload
    }

    static func icmpEcho(id: UInt16, seq: UInt16, data: [UInt8]) -> [UInt8] {
        var m: [UInt8] = [8, 0, 0, 0] + be16(id) + be16(seq) + data
        let c = checksum(m)
        m[2] = UInt8(c >> 8); m[3] = UInt8(c & 0xFF)
        return m
    }

    static func pseudoSum(src: [UInt8], dst: [UInt8], proto: UInt8, length: Int) -> UInt32 {
        UInt32(sum(src + dst + [0, proto] + be16(UInt16(length))))
    }

    struct TCPFlags: OptionSet { let rawValue: UInt8
        static let fin = TCPFlags(rawValue: 1), syn = TCPFlags(rawValue: 2), rst = TCPFlags(rawValue: 4)
        static let psh = TCPFlags(rawValue: 8), ack = TCPFlags(rawValue: 16)
    }

    /// A TCP segment with a full checksum, or with only the pseudo-header sum in the
    /// checksum field (`partial`: what VIRTIO_NET_HDR_F_NEEDS_CSUM expects).
    static func tcp(src: [UInt8], dst: [UInt8], sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32,
                    flags: TCPFlags, options: [UInt8] = [], payload: [UInt8] = [], partial: Bool = false) -> [UInt8] {
        let headerLength = 20 + options.count
        var t: [UInt8] = be16(sport) + be16(dport) + be32(seq) + be32(ack) + [UInt8(headerLength / 4) << 4, flags.rawValue]
            + be16(65535) + [0, 0, 0, 0] + options + payload
        let pseudo = pseudoSum(src: src, dst: dst, proto: 6, length: t.count)
        let c = partial ? sum([], initial: pseudo) : ~sum(t, initial: pseudo)
        t[16] = UInt8(c >> 8); t[17] = UInt8(c & 0xFF)
        return t
    }

    static func udp(src: [UInt8], dst: [UInt8], sport: UInt16, dport: UInt16, payload: [UInt8]) -> [UInt8] {
        var u: [UInt8] = be16(sport) + be16(dport) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        var c = ~sum(u, initial: pseudoSum(src: src, dst: dst, proto: 17, length: u.count))
        if c == 0 { c = 0xFFFF }
        u[6] = UInt8(c >> 8); u[7] = UInt8(c & 0xFF)
        return u
    }

    /// DHCPDISCOVER (RFC 2131) from `mac`, broadcast.
    static func dhcpDiscover(mac: [UInt8], xid: UInt32) -> [UInt8] {
        var bootp: [UInt8] = [1, 1, 6, 0] + be32(xid) + [0, 0, 0x80, 0] + [UInt8](repeating: 0, count: 16)
        bootp += mac + [UInt8](repeating: 0, count: 10) + [UInt8](repeating: 0, count: 192)
        bootp += [99, 130, 83, 99, 53, 1, 1, 255]
        let ip = ipv4(src: [0, 0, 0, 0], dst: [255, 255, 255, 255], proto: 17,
                      payload: udp(src: [0, 0, 0, 0], dst: [255, 255, 255, 255], sport: 68, dport: 67, payload: bootp))
        return ethernet(dst: broadcast, src: mac, type: 0x0800, payload: ip)
    }

    // MARK: Reading

    static func etherType(_ f: [UInt8]) -> UInt16? { f.count >= 14 ? UInt16(f[12]) << 8 | UInt16(f[13]) : nil }
    static func isARPReply(_ f: [UInt8], from ip: [UInt8]) -> Bool {
        etherType(f) == 0x0806 && f.count >= 42 && f[20] == 0 && f[21] == 2 && Array(f[28 ..< 32]) == ip
    }
    static func isARPRequest(_ f: [UInt8], for ip: [UInt8]) -> Bool {
        etherType(f) == 0x0806 && f.count >= 42 && f[21] == 1 && Array(f[38 ..< 42]) == ip
    }
    static func ipProto(_ f: [UInt8]) -> UInt8? { etherType(f) == 0x0800 && f.count >= 34 ? f[23] : nil }
    static func ipPayload(_ f: [UInt8]) -> [UInt8] { Array(f[(14 + Int(f[14] & 0xF) * 4)...]) }
    static func isICMPEchoReply(_ f: [UInt8], id: UInt16) -> Bool {
        guard ipProto(f) == 1 else { return false }
        let p = ipPayload(f)
        return p.count >= 8 && p[0] == 0 && UInt16(p[4]) << 8 | UInt16(p[5]) == id
    }
    static func tcpHeader(_ f: [UInt8]) -> (sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32, flags: TCPFlags)? {
        guard ipProto(f) == 6 else { return nil }
        let t = ipPayload(f)
        guard t.count >= 20 else { return nil }
        func u32(_ o: Int) -> UInt32 { UInt32(t[o]) << 24 | UInt32(t[o + 1]) << 16 | UInt32(t[o + 2]) << 8 | UInt32(t[o + 3]) }
        return (UInt16(t[0]) << 8 | UInt16(t[1]), UInt16(t[2]) << 8 | UInt16(t[3]), u32(4), u32(8), TCPFlags(rawValue: t[13] & 0x3F))
    }
    static func udpPorts(_ f: [UInt8]) -> (sport: UInt16, dport: UInt16, payload: [UInt8])? {
        guard ipProto(f) == 17 else { return nil }
        let u = ipPayload(f)
        guard u.count >= 8 else { return nil }
        return (UInt16(u[0]) << 8 | UInt16(u[1]), UInt16(u[2]) << 8 | UInt16(u[3]), Array(u[8...]))
    }
}
