/// The Internet checksum (RFC 1071) written out longhand: big-endian 16-bit words, an odd
/// last byte padded with zero, the end-around carry folded after every addition (§1, §4.1).
///
/// Deliberately simple and separate from VMMNet's `InternetChecksum`, so that tests check
/// the code under test against an independent implementation rather than against itself.
public enum NaiveChecksum {
    /// The ones'-complement sum of `bytes`, folded to 16 bits but not complemented,
    /// starting from `initial` (e.g. a pseudo-header's sum).
    public static func sum(_ bytes: [UInt8], initial: UInt16 = 0) -> UInt16 {
        var s = UInt32(initial)
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

    /// The checksum to store in a header: the complement of `sum` (RFC 1071 §1 (3)).
    public static func checksum(_ bytes: [UInt8]) -> UInt16 { ~sum(bytes) }
}
