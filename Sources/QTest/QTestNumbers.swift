/// Number and data formats of QEMU's qtest protocol (softmmu/qtest.c).
enum QTestFormat {
    /// `strtoull(text, NULL, 0)` as qtest uses it: `0x` hex, leading `0` octal, else
    /// decimal; a leading `-` wraps (two's complement), as strtoull does. Whole word only.
    static func unsigned(_ text: Substring) -> UInt64? {
        var s = text
        var negative = false
        if s.first == "-" { negative = true; s = s.dropFirst() } else if s.first == "+" { s = s.dropFirst() }
        let radix: Int
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            s = s.dropFirst(2); radix = 16
        } else if s.count > 1 && s.hasPrefix("0") {
            s = s.dropFirst(); radix = 8
        } else {
            radix = 10
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isHexDigit }), let v = UInt64(s, radix: radix) else { return nil }
        return negative ? 0 &- v : v
    }

    /// `strtoll(text, NULL, 0)`.
    static func signed(_ text: Substring) -> Int64? {
        guard let u = unsigned(text) else { return nil }
        let v = Int64(bitPattern: u)
        // Out of range for a signed value: strtoll would report ERANGE.
        if text.first == "-" ? v > 0 : v < 0 { return nil }
        return v
    }

    /// `printf("%0*llx", width, v)`.
    static func hex(_ v: UInt64, width: Int) -> String {
        let digits = String(v, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// Bytes as qtest's `read` answers them: two lowercase hex digits per byte.
    static func hexBytes(_ bytes: [UInt8]) -> String {
        var out = ""
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += hex(UInt64(b), width: 2) }
        return out
    }

    /// Parses `write`'s `0xDATA`: byte i is digits 2i+2, 2i+3; missing bytes are zero.
    /// Nil when a digit is not hex (QEMU would write garbage there).
    static func dataBytes(_ word: Substring, count: Int) -> [UInt8]? {
        let chars = Array(word.utf8)
        var out = [UInt8](repeating: 0, count: count)
        for i in 0 ..< count {
            let hi = i * 2 + 2
            guard hi + 1 < chars.count else { break }
            guard let a = nibble(chars[hi]), let b = nibble(chars[hi + 1]) else { return nil }
            out[i] = a << 4 | b
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a") ... UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A") ... UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Standard base64 with padding (GLib's g_base64_encode).
    static func base64(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let b0 = bytes[i], b1 = n > 1 ? bytes[i + 1] : 0, b2 = n > 2 ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x3) << 4 | b1 >> 4)])
            out.append(n > 1 ? alphabet[Int((b1 & 0xF) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(n > 2 ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base64, skipping characters outside the alphabet as GLib does; stops at '='.
    static func unbase64(_ text: Substring) -> [UInt8] {
        var out: [UInt8] = []
        var acc: UInt32 = 0, bits = 0
        for c in text.utf8 {
            if c == UInt8(ascii: "=") { break }
            guard let v = alphabet.firstIndex(of: c) else { continue }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return out
    }
}
