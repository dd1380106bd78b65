import VMMTestKit

/// Accessors for what the kernel or libslirp sent back to the fake guest, written by hand
/// on purpose: the tests check the backends against the real network stacks, not our parsers.
enum Received {
    static func etherType(_ f: [UInt8]) -> UInt16? { f.count >= 14 ? f.be16(12) : nil }
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
        return p.count >= 8 && p[0] == 0 && p.be16(4) == id
    }
    static func tcpHeader(_ f: [UInt8]) -> (sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32, flags: TCPFlags)? {
        guard ipProto(f) == 6 else { return nil }
        let t = ipPayload(f)
        guard t.count >= 20 else { return nil }
        return (t.be16(0), t.be16(2), t.be32(4), t.be32(8), TCPFlags(rawValue: t[13] & 0x3F))
    }
    static func udpPorts(_ f: [UInt8]) -> (sport: UInt16, dport: UInt16, payload: [UInt8])? {
        guard ipProto(f) == 17 else { return nil }
        let u = ipPayload(f)
        guard u.count >= 8 else { return nil }
        return (u.be16(0), u.be16(2), Array(u[8...]))
    }
}
