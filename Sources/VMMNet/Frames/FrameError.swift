/// Why a frame helper refused a frame. Frames come from guests: these are expected
/// outcomes to count (`DropReason.malformed` / `.oversized`) and log rate-limited, not bugs.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frame ends inside a header it must have.
    case truncated(needed: Int, length: Int)
    /// A header field is impossible (IHL < 5, a TCP data offset < 5, a version mismatch…).
    case badHeader(String)
    /// A checksum start/field/end lies outside the frame or in the wrong order.
    case checksumRange(start: Int, field: Int, end: Int, length: Int)
    /// A segmentation header length that the frame or the layout cannot hold.
    case headerLength(Int, frameLength: Int)
    /// A segment size below `SegmentationLimits.minimumSegmentSize`, or one that leaves no room for payload.
    case segmentSize(Int)
    /// The frame (or a segment) exceeds what the backend, the buffer or IP can carry.
    case tooLarge(length: Int, limit: Int)
    /// A virtio-net `gso_type` that is unknown or does not match the frame.
    case unsupportedGSO(UInt8)

    /// The counter a dropped frame belongs under.
    public var dropReason: DropReason {
        if case .tooLarge = self { return .oversized }
        return .malformed
    }

    public var description: String {
        switch self {
        case let .truncated(needed, length): "frame of \(length) bytes is shorter than its headers (\(needed) needed)"
        case let .badHeader(what): "malformed header: \(what)"
        case let .checksumRange(s, f, e, l): "checksum range start \(s) field \(f) end \(e) does not fit a \(l)-byte frame"
        case let .headerLength(h, l): "header length \(h) does not fit a \(l)-byte frame"
        case let .segmentSize(m): "segment size \(m) leaves no room for payload"
        case let .tooLarge(l, limit): "\(l) bytes exceed the limit of \(limit)"
        case let .unsupportedGSO(t): "unsupported or mismatched GSO type \(t)"
        }
    }
}
