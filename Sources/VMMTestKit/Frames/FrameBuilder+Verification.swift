/// Checks of frames the code under test produced, with `NaiveChecksum`. `ip` is the offset
/// of the IP header (14, or 18 behind a VLAN tag); the version comes from its first nibble.
extension FrameBuilder {
    /// Whether the IPv4 header at `ip` sums to 0xFFFF, i.e. its checksum verifies (RFC 1071 §1 (4)).
    public static func ipv4HeaderValid(_ frame: [UInt8], ip: Int = 14) -> Bool {
        let end = ip + Int(frame[ip] & 0x0F) * 4
        return end <= frame.count && NaiveChecksum.sum(Array(frame[ip ..< end])) == 0xFFFF
    }

    /// Whether the TCP/UDP checksum verifies: pseudo-header (addresses from the frame) plus
    /// segment sum to 0xFFFF. The segment runs from `l4` (default: right after the IP header,
    /// IPv6 without extension headers) to the end the IP header's length field gives, so
    /// Ethernet padding is ignored. `proto` defaults to the IP header's protocol / next header.
    public static func transportChecksumValid(_ frame: [UInt8], ip: Int = 14, l4: Int? = nil, proto: UInt8? = nil) -> Bool {
        let v4 = frame[ip] >> 4 == 4
        let start = l4 ?? (v4 ? ip + Int(frame[ip] & 0x0F) * 4 : ip + 40)
        let end = v4 ? ip + Int(frame.be16(ip + 2)) : ip + 40 + Int(frame.be16(ip + 4))
        guard start <= end, end <= frame.count else { return false }
        let segment = Array(frame[start ..< end])
        let pseudo = pseudoHeader(of: frame, ip: ip, proto: proto ?? frame[ip + (v4 ? 9 : 6)], length: segment.count)
        return NaiveChecksum.sum(pseudo + segment) == 0xFFFF
    }

    /// Whether every checksum of an IPv4 or IPv6 TCP/UDP frame verifies: the IPv4 header's
    /// (for IPv4) and the transport one.
    public static func checksumsValid(_ frame: [UInt8], ip: Int = 14) -> Bool {
        (frame[ip] >> 4 != 4 || ipv4HeaderValid(frame, ip: ip)) && transportChecksumValid(frame, ip: ip)
    }

    /// The pseudo-header (see `pseudoHeader(source:destination:proto:length:)`) for the
    /// addresses of the IP header at `ip` in `frame`.
    static func pseudoHeader(of frame: [UInt8], ip: Int = 14, proto: UInt8, length: Int) -> [UInt8] {
        frame[ip] >> 4 == 4
            ? pseudoHeader(source: Array(frame[ip + 12 ..< ip + 16]), destination: Array(frame[ip + 16 ..< ip + 20]), proto: proto, length: length)
            : pseudoHeader(source: Array(frame[ip + 8 ..< ip + 24]), destination: Array(frame[ip + 24 ..< ip + 40]), proto: proto, length: length)
    }

    /// The pseudo-header's sum, not complemented: what a driver leaves in the transport
    /// checksum field for the device to finish (CHECKSUM_PARTIAL, NEEDS_CSUM).
    public static func pseudoHeaderSum(_ frame: [UInt8], ip: Int = 14, proto: UInt8, length: Int) -> UInt16 {
        NaiveChecksum.sum(pseudoHeader(of: frame, ip: ip, proto: proto, length: length))
    }

    /// `frame` as Linux's CHECKSUM_PARTIAL leaves it: the TCP (offset 16) or UDP (offset 6)
    /// checksum field at `l4` holds the pseudo-header sum for the segment from `l4` to the
    /// frame's end. `l4` defaults to right after an IPv4 header or a bare IPv6 header.
    public static func withPartialChecksum(_ frame: [UInt8], ip: Int = 14, l4: Int? = nil) -> [UInt8] {
        let v4 = frame[ip] >> 4 == 4
        let start = l4 ?? (v4 ? ip + Int(frame[ip] & 0x0F) * 4 : ip + 40)
        let proto = frame[ip + (v4 ? 9 : 6)]
        var f = frame
        f.put16(pseudoHeaderSum(frame, ip: ip, proto: proto, length: frame.count - start), at: start + (proto == 17 ? 6 : 16))
        return f
    }
}
