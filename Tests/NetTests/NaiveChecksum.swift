// An independent, deliberately simple RFC 1071 implementation for checking the fast one:
// byte by byte, big-endian words, carries folded at the end.
enum Naive {
    static func sum(_ bytes: [UInt8]) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i])
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            s += hi << 8 | lo
            while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
            i += 2
        }
        return UInt16(s)
    }

    static func checksum(_ bytes: [UInt8]) -> UInt16 { ~sum(bytes) }

    /// Whether a TCP/UDP segment in `frame` (IPv4 or IPv6 at `ip`, transport at `l4`,
    /// ending at the frame's end) checks out: pseudo-header + segment sums to 0xFFFF.
    static func transportValid(_ frame: [UInt8], ip: Int, l4: Int, proto: UInt8) -> Bool {
        let segment = Array(frame[l4...])
        var pseudo: [UInt8]
        if frame[ip] >> 4 == 4 {
            pseudo = Array(frame[ip + 12 ..< ip + 20]) + [0, proto, UInt8(segment.count >> 8), UInt8(segment.count & 0xFF)]
        } else {
            let n = UInt32(segment.count)
            pseudo = Array(frame[ip + 8 ..< ip + 40]) + [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), 0, 0, 0, proto]
        }
        return sum(pseudo + segment) == 0xFFFF
    }

    static func ipv4HeaderValid(_ frame: [UInt8], ip: Int) -> Bool {
        let ihl = Int(frame[ip] & 0x0F) * 4
        return sum(Array(frame[ip ..< ip + ihl])) == 0xFFFF
    }
}

extension Array where Element == UInt8 {
    func be16(_ o: Int) -> UInt16 { UInt16(self[o]) << 8 | UInt16(self[o + 1]) }
    func be32(_ o: Int) -> UInt32 { UInt32(be16(o)) << 16 | UInt32(be16(o + 2)) }
    mutating func put16(_ v: UInt16, at o: Int) { self[o] = UInt8(v >> 8); self[o + 1] = UInt8(v & 0xFF) }
    mutating func put32(_ v: UInt32, at o: Int) { put16(UInt16(v >> 16), at: o); put16(UInt16(v & 0xFFFF), at: o + 2) }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
struct TestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0 ..< n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
