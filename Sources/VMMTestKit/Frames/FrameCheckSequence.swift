/// The Ethernet frame check sequence: CRC-32 (IEEE 802.3 §3.2.9), computed bit by bit
/// (reflected polynomial 0xEDB88320, initial and final value all ones), independent of any
/// table-driven implementation under test.
public enum FrameCheckSequence {
    /// The CRC-32 of `bytes` (appended least significant byte first on the wire).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0 ..< 8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
