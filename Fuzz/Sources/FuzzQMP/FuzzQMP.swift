import FuzzSupport
@testable import QMP

/// Fuzz target: what a QMP client sends, cut into reads of any size. The stream splitter
/// must keep every held message within its byte limit; every message it emits must parse
/// or fail with a typed error (never trap, however deep or long); what parses must
/// survive serialization and parsing again unchanged.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQMP(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    var stream = QMPStream(maxMessageBytes: 4096, maxDepth: 8)
    while !input.isExhausted {
        let chunk = input.bytes(upTo: 255)
        for piece in stream.feed(chunk) {
            guard case let .message(bytes) = piece else { continue }
            fuzzCheck(bytes.count <= 4096, "message of \(bytes.count) bytes passed the 4096 limit")
            guard let value = try? JSONParser.parse(bytes, maxDepth: 8) else { continue }
            let again = try? JSONParser.parse(Array(value.serialized.utf8), maxDepth: 8)
            fuzzCheck(again == value, "serialization does not round trip: \(value.serialized)")
        }
        fuzzCheck(stream.current.count <= 4096, "splitter holds \(stream.current.count) bytes")
    }
    return 0
}
