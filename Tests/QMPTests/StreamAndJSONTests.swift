import Testing
@testable import QMP

/// The QMP wire format at unit level: the stream splitter (qmp-spec.rst: not line
/// delimited) and the bounded JSON parser.
@Suite struct QMPStreamTests {
    func messages(_ pieces: [QMPStream.Piece]) -> [String] {
        pieces.compactMap { if case let .message(b) = $0 { String(decoding: b, as: UTF8.self) } else { nil } }
    }

    @Test func backToBackObjectsAndSplitReads() {
        var s = QMPStream()
        #expect(messages(s.feed(Array(#"{"a":1}{"b":"}{"}  "#.utf8))) == [#"{"a":1}"#, #"{"b":"}{"}"#])
        #expect(s.feed(Array(#"{"execute":"qu"#.utf8)).isEmpty)
        #expect(messages(s.feed(Array(#"it","id":"\"}"}"#.utf8))) == [#"{"execute":"quit","id":"\"}"}"#])
    }

    @Test func garbageIsOneErrorPerRun() {
        var s = QMPStream()
        let out = s.feed(Array("garbage!!! {\"x\":1}".utf8))
        #expect(out.count == 2)
        #expect(out.first == .garbage("JSON parse error"))
        #expect(messages(out) == [#"{"x":1}"#])
    }

    @Test func limitsBoundWhatIsHeld() {
        var s = QMPStream(maxMessageBytes: 100, maxDepth: 4)
        let deep = s.feed(Array(String(repeating: "[", count: 50).utf8))
        #expect(deep.contains { if case .garbage = $0 { true } else { false } })
        #expect(s.current.count <= 100)
        var t = QMPStream(maxMessageBytes: 100, maxDepth: 4)
        let long = t.feed(Array(("{\"a\":\"" + String(repeating: "x", count: 500) + "\"}{\"ok\":1}").utf8))
        #expect(long.first == .garbage("message longer than 100 bytes"))
        #expect(messages(long) == [#"{"ok":1}"#])
    }
}

@Suite struct JSONParserTests {
    @Test func valuesEscapesAndRoundTrip() throws {
        let v = try JSONParser.parse(Array(#" {"s":"a\"b\\c\n\u00e9\u0001","n":-12,"d":1.5,"t":true,"z":null,"l":[1,[2]]} "#.utf8))
        #expect(v["s"]?.stringValue == "a\"b\\c\né\u{01}")
        #expect(v["n"]?.intValue == -12)
        #expect(v["d"] == .double(1.5))
        #expect(try JSONParser.parse(Array(v.serialized.utf8)) == v)
    }

    /// RFC 8259 §7: a character outside the BMP arrives as two escapes (Python's
    /// json.dumps writes every emoji so); a lone half is no character and is refused, as
    /// QEMU's parser refuses it.
    @Test func surrogatePairsMakeOneCharacter() throws {
        #expect(try JSONParser.parse(Array(#""\ud83d\ude00""#.utf8)).stringValue == "😀")
        #expect(try JSONParser.parse(Array(#""\uD83D\uDE00x""#.utf8)).stringValue == "😀x")
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#""\ud83dx""#.utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#""\ude00\ud83d""#.utf8)) }
    }

    /// What QEMU's parser refuses is refused here too: a repeated key (a command would
    /// read one of the two), bytes that are not UTF-8 (they were once replaced with
    /// U+FFFD and let through), and U+0000, which would cut a path short at the C call
    /// that takes it (a capture path "a.pcap\u0000/x" created a.pcap).
    @Test func duplicateKeysBadUTF8AndNULAreRefused() throws {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#"{"execute":"query-name","execute":"x"}"#.utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#"{"a":{"b":1,"b":2}}"#.utf8)) }
        #expect(try JSONParser.parse(Array(#"{"a":{"b":1},"b":{"a":2}}"#.utf8))["b"]?["a"] == .int(2))
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0xC0, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x61, 0xE2, 0x82, 0x22]) }   // cut short
        #expect(try JSONParser.parse([0x22, 0xE2, 0x82, 0xAC, 0x22]).stringValue == "€")
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(#""a\u0000b""#.utf8)) }
        #expect(try JSONParser.parse(Array(#""a\u0001b""#.utf8)).stringValue == "a\u{01}b")
    }

    @Test func numbersFollowTheGrammar() throws {
        for (text, value) in [("0", JSONValue.int(0)), ("-0", .int(0)), ("10", .int(10)), ("1e3", .double(1000)), ("-1.25E-2", .double(-0.0125))] {
            #expect(try JSONParser.parse(Array(text.utf8)) == value, "\(text)")
        }
    }

    @Test func malformedInputIsATypedError() {
        for text in ["", "{", "{\"a\"}", "[1,]", "tru", "\"\\q\"", "1 2", "{\"a\":1,}", "\"\u{01}\"", "[" + String(repeating: "[", count: 40)] + [
            "+5", "01", ".5", "5.", "1e", "--1", "1.e3", #""\u+041""#, #""\u-000""#, #""\u 041""#,
        ] {
            #expect(throws: JSONParseError.self, "\(text)") { try JSONParser.parse(Array(text.utf8), maxDepth: 32) }
        }
    }
}
