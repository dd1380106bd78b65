/// The IEEE 802.3 frame check sequence (CRC-32, reflected polynomial 0xEDB88320), which
/// the 82540 leaves at the end of a received frame unless RCTL.SECRC strips it (Intel
/// 8254x SDM §13.4.22). Transmitted least significant byte first.
enum EthernetFCS {
    static let table: [UInt32] = (0 ..< 256).map { n in
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func compute(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { crc = t[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }
}
