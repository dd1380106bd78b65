/// A JSON value as QMP carries it (RFC 8259), with a parser built for hostile input: it
/// refuses nesting deeper than a limit and input longer than a limit, and never traps.
/// The VMM process carries no Foundation; QMP needs nothing more than this.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    /// Members in the order received (QMP dictionaries are small).
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case let (.bool(x), .bool(y)): x == y
        case let (.int(x), .int(y)): x == y
        case let (.double(x), .double(y)): x == y
        case let (.string(x), .string(y)): x == y
        case let (.array(x), .array(y)): x == y
        case let (.object(x), .object(y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    public var stringValue: String? { if case let .string(s) = self { s } else { nil } }
    public var boolValue: Bool? { if case let .bool(b) = self { b } else { nil } }
    public var intValue: Int64? { if case let .int(i) = self { i } else { nil } }
    public var objectMembers: [(String, JSONValue)]? { if case let .object(m) = self { m } else { nil } }

    /// Compact serialization (what QMP sends; one value per line).
    public var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d): out += d.isFinite ? String(d) : "null"
        case let .string(s): Self.quote(s, into: &out)
        case let .array(items):
            out += "["
            for (i, v) in items.enumerated() { if i > 0 { out += ", " }; v.write(to: &out) }
            out += "]"
        case let .object(members):
            out += "{"
            for (i, (k, v)) in members.enumerated() {
                if i > 0 { out += ", " }
                Self.quote(k, into: &out)
                out += ": "
                v.write(to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}

public struct JSONParseError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Parses one JSON value from bytes. `maxDepth` bounds nesting (arrays and objects).
public struct JSONParser {
    private let bytes: [UInt8]
    private var i = 0
    private let maxDepth: Int

    public static func parse(_ bytes: [UInt8], maxDepth: Int = 32) throws(JSONParseError) -> JSONValue {
        var p = JSONParser(bytes: bytes, maxDepth: maxDepth)
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw JSONParseError("text after the JSON value") }
        return v
    }

    private init(bytes: [UInt8], maxDepth: Int) { self.bytes = bytes; self.maxDepth = maxDepth }

    private var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

    private mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { i += 1 }
    }

    private mutating func expect(_ literal: String) throws(JSONParseError) {
        for b in literal.utf8 {
            guard peek == b else { throw JSONParseError("expected \(literal)") }
            i += 1
        }
    }

    private mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        skipSpace()
        guard let c = peek else { throw JSONParseError("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < maxDepth else { throw JSONParseError("nesting deeper than \(maxDepth)") }
            i += 1
            var members: [(String, JSONValue)] = []
            // QEMU's parser refuses a repeated key (json-parser.c `parse_pair`): which of the
            // two a command would read is not for the client to guess.
            var keys = Set<String>()
            skipSpace()
            if peek == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw JSONParseError("expected a member name") }
                let key = try string()
                guard keys.insert(key).inserted else { throw JSONParseError("duplicate key") }
                skipSpace()
                try expect(":")
                members.append((key, try value(depth: depth + 1)))
                skipSpace()
                if peek == UInt8(ascii: ",") { i += 1; continue }
                try expect("}")
                return .object(members)
            }
        case UInt8(ascii: "["):
            guard depth < maxDepth else { throw JSONParseError("nesting deeper than \(maxDepth)") }
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if peek == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                items.append(try value(depth: depth + 1))
                skipSpace()
                if peek == UInt8(ascii: ",") { i += 1; continue }
                try expect("]")
                return .array(items)
            }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        default: return try number()
        }
    }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = i
        while let c = peek, (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") { i += 1 }
        guard i > start, i - start <= 64, Self.isJSONNumber(bytes[start ..< i]) else { throw JSONParseError("bad number") }
        let text = String(decoding: bytes[start ..< i], as: UTF8.self)
        if let n = Int64(text) { return .int(n) }
        if let d = Double(text), d.isFinite { return .double(d) }
        throw JSONParseError("bad number '\(text)'")
    }

    /// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` — no `+5`,
    /// `01`, `.5` or `5.`, which Swift's parsers would take and QEMU's lexer refuses.
    private static func isJSONNumber(_ text: ArraySlice<UInt8>) -> Bool {
        var j = text.startIndex
        func at(_ k: Int) -> UInt8? { k < text.endIndex ? text[k] : nil }
        func digits() -> Int { let s = j; while let c = at(j), c >= 0x30, c <= 0x39 { j += 1 }; return j - s }
        if at(j) == UInt8(ascii: "-") { j += 1 }
        if at(j) == UInt8(ascii: "0") { j += 1 } else if digits() == 0 { return false }
        if at(j) == UInt8(ascii: ".") { j += 1; guard digits() > 0 else { return false } }
        if at(j) == UInt8(ascii: "e") || at(j) == UInt8(ascii: "E") {
            j += 1
            if at(j) == UInt8(ascii: "+") || at(j) == UInt8(ascii: "-") { j += 1 }
            guard digits() > 0 else { return false }
        }
        return j == text.endIndex
    }

    /// Four hex digits at `k` (a `\u` escape's), nothing else (no sign, no space).
    private func hex4(at k: Int) -> UInt32? {
        guard k >= 0, k + 4 <= bytes.count else { return nil }
        var v: UInt32 = 0
        for c in bytes[k ..< k + 4] {
            let d: UInt8
            switch c {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            v = v << 4 | UInt32(d)
        }
        return v
    }

    private mutating func string() throws(JSONParseError) -> String {
        i += 1 // opening quote
        var scalars = String.UnicodeScalarView()
        var raw: [UInt8] = []
        // Bytes as they came must be UTF-8 (QEMU: "invalid UTF-8 sequence in string"), not
        // quietly replaced.
        func flush() throws(JSONParseError) {
            guard !raw.isEmpty else { return }
            guard let text = String(validating: raw, as: UTF8.self) else { throw JSONParseError("invalid UTF-8 sequence in string") }
            scalars.append(contentsOf: text.unicodeScalars)
            raw.removeAll()
        }
        while true {
            guard let c = peek else { throw JSONParseError("unterminated string") }
            i += 1
            if c == UInt8(ascii: "\"") { break }
            guard c >= 0x20 else { throw JSONParseError("control character in a string") }
            guard c == UInt8(ascii: "\\") else { raw.append(c); continue }
            try flush()
            guard let e = peek else { throw JSONParseError("unterminated escape") }
            i += 1
            switch e {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                guard let v = hex4(at: i) else { throw JSONParseError("bad \\u escape") }
                i += 4
                // RFC 8259 §7: a character outside the BMP is a high surrogate escape
                // followed by a low one (what Python's json.dumps writes for any emoji).
                if (0xD800 ... 0xDBFF).contains(v), i + 6 <= bytes.count,
                   bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u"),
                   let low = hex4(at: i + 2), (0xDC00 ... 0xDFFF).contains(low) {
                    i += 6
                    scalars.append(Unicode.Scalar(0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)) ?? "\u{FFFD}")
                } else {
                    // A lone surrogate is no character (QEMU: "is not a valid Unicode
                    // character"). U+0000 is refused too: names and paths go to C calls,
                    // where it would cut them short (QEMU keeps it as modified UTF-8).
                    guard v != 0, let scalar = Unicode.Scalar(v) else {
                        let hex = String(v, radix: 16)
                        throw JSONParseError("\\u\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex) is not a valid character here")
                    }
                    scalars.append(scalar)
                }
            default: throw JSONParseError("bad escape")
            }
        }
        try flush()
        return String(scalars)
    }
}
