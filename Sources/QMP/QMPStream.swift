/// Cuts a QMP byte stream into JSON texts. QMP is not line-delimited (qmp-spec.rst,
/// "Wire protocol"): a client may send several objects on a line or one over many reads,
/// so the splitter tracks strings and nesting. It bounds what a client can make the
/// server hold: one message of at most `maxMessageBytes` and `maxDepth` levels.
struct QMPStream {
    enum Piece: Equatable {
        /// A complete top-level JSON text.
        case message([UInt8])
        /// Input that cannot be JSON (stray bytes, too deep, too long): answer with an
        /// error and drop what was collected (QEMU's json-streamer does the same).
        case garbage(String)
    }

    let maxMessageBytes: Int
    let maxDepth: Int
    private(set) var current: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    /// Skipping the rest of a message that broke a limit, until its nesting closes.
    private var discarding = false

    init(maxMessageBytes: Int = 64 * 1024, maxDepth: Int = 32) {
        self.maxMessageBytes = maxMessageBytes; self.maxDepth = maxDepth
    }

    /// Feeds bytes; returns the pieces completed by them, in order.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [Piece] {
        var out: [Piece] = []
        for b in bytes {
            if depth == 0 && !inString {
                // Between messages only whitespace is allowed.
                if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { continue }
                guard b == UInt8(ascii: "{") || b == UInt8(ascii: "[") else {
                    report(.garbage("JSON parse error"), into: &out)
                    continue
                }
                discarding = false
            }
            if !discarding {
                current.append(b)
                if current.count > maxMessageBytes {
                    report(.garbage("message longer than \(maxMessageBytes) bytes"), into: &out)
                    current.removeAll(keepingCapacity: false)
                    discarding = true
                }
            }
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > maxDepth {
                    // As QEMU's json-streamer: report, then start afresh with the next byte.
                    report(.garbage("nesting deeper than \(maxDepth)"), into: &out)
                    current.removeAll(keepingCapacity: false)
                    depth = 0
                    discarding = false
                }
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 {
                    if !discarding { out.append(.message(current)) }
                    current.removeAll(keepingCapacity: true)
                    discarding = false
                }
            default: break
            }
        }
        return out
    }

    /// Appends a garbage report unless the previous piece already is one: a run of bad
    /// input gets one error per read, not one per byte.
    private func report(_ piece: Piece, into out: inout [Piece]) {
        if case .garbage? = out.last { return }
        out.append(piece)
    }
}
