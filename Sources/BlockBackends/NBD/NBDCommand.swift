#if canImport(Glibc)
import Glibc
#endif
import CNBD
import VMMBlock

/// One libnbd command: a request becomes one or more (a scatter list is one read or
/// write per segment, zero-copy into guest memory; anything longer than the server's
/// payload limit or NBD's 32-bit lengths is split, by `NBDPieceCursor`).
enum NBDPiece {
    case read(UnsafeMutableRawPointer, count: Int, offset: UInt64)
    case write(UnsafeRawPointer, count: Int, offset: UInt64)
    case flush
    case trim(count: UInt64, offset: UInt64)
    case zero(count: UInt64, offset: UInt64, noHole: Bool)

    /// Trim and zero lengths are 32-bit on the wire; stay well inside, block aligned.
    static let maxRangeLength: UInt64 = 1 << 30

    /// Issues the command; returns libnbd's cookie, or -1 (then `nbd_get_error` says why).
    /// `callback` is libnbd's to free, even when the call fails.
    func issue(on h: OpaquePointer, _ callback: nbd_completion_callback) -> Int64 {
        switch self {
        case let .read(buffer, count, offset): nbd_aio_pread(h, buffer, count, offset, callback, 0)
        case let .write(buffer, count, offset): nbd_aio_pwrite(h, buffer, count, offset, callback, 0)
        case .flush: nbd_aio_flush(h, callback, 0)
        case let .trim(count, offset): nbd_aio_trim(h, count, offset, callback, 0)
        case let .zero(count, offset, noHole): nbd_aio_zero(h, count, offset, callback, noHole ? UInt32(LIBNBD_CMD_FLAG_NO_HOLE) : 0)
        }
    }
}

/// A request's commands, produced one at a time as the in-flight window has room, so a
/// request costs memory and libnbd commands only for the pieces on the wire: a guest's
/// 2 GiB request against a server whose payload limit is 4 KiB is 512 Ki commands, and
/// making them all at once would allocate them all (and queue them all in libnbd).
struct NBDPieceCursor {
    let request: BlockRequest
    /// The request's byte ranges overflow (the device checked them; this only keeps the
    /// arithmetic below from trapping): it must fail, nothing is issued.
    let isMalformed: Bool
    /// Every command was produced, or the rest was abandoned after an error.
    private(set) var isFinished = false
    /// Read/write: the segment under way and the bytes of it done; trim/zero: the bytes done.
    private var segment = 0
    private var doneInSegment = 0
    private var done: UInt64 = 0
    /// The device offset of the next read/write piece.
    private var position: UInt64

    init(_ request: BlockRequest) {
        self.request = request
        switch request {
        case let .read(offset, segments):
            position = offset
            isMalformed = Self.end(offset, segments.lazy.map(\.count)) == nil
        case let .write(offset, segments):
            position = offset
            isMalformed = Self.end(offset, segments.lazy.map(\.count)) == nil
        case .flush:
            position = 0
            isMalformed = false
        case let .discard(offset, length), let .writeZeroes(offset, length, _):
            position = offset
            isMalformed = offset.addingReportingOverflow(length).overflow
        }
        isFinished = isMalformed
    }

    private static func end(_ offset: UInt64, _ counts: some Sequence<Int>) -> UInt64? {
        ScatterList.totalLength(counts).flatMap { ScatterList.end(offset: offset, length: $0) }
    }

    /// Starts over (the request is sent again on a new connection).
    mutating func rewind() { self = NBDPieceCursor(request) }

    /// Produces no more commands: those in flight finish the request.
    mutating func abandon() { isFinished = true }

    /// The next command, at most `maxPayload` bytes of data; nil when there is none. The
    /// overflow check in `init` bounds every sum below.
    mutating func next(maxPayload: Int) -> NBDPiece? {
        guard !isFinished else { return nil }
        let maxPayload = max(1, maxPayload)
        switch request {
        case let .read(_, segments):
            guard let (base, n, at) = nextSlice(segments.lazy.map { ($0.baseAddress.map(UnsafeRawPointer.init), $0.count) }, maxPayload)
            else { return nil }
            return .read(UnsafeMutableRawPointer(mutating: base), count: n, offset: at)
        case let .write(_, segments):
            guard let (base, n, at) = nextSlice(segments.lazy.map { ($0.baseAddress, $0.count) }, maxPayload) else { return nil }
            return .write(base, count: n, offset: at)
        case .flush:
            isFinished = true
            return .flush
        case let .discard(offset, length):
            guard let (at, n) = nextRange(offset, length) else { return nil }
            return .trim(count: n, offset: at)
        case let .writeZeroes(offset, length, mayUnmap):
            guard let (at, n) = nextRange(offset, length) else { return nil }
            return .zero(count: n, offset: at, noHole: !mayUnmap)
        }
    }

    /// The next piece of the scatter list (empty segments skipped): where it is in memory,
    /// its length and its device offset.
    private mutating func nextSlice<S: Collection>(_ segments: S, _ maxPayload: Int) -> (UnsafeRawPointer, Int, UInt64)?
    where S.Element == (UnsafeRawPointer?, Int), S.Index == Int {
        while segment < segments.count {
            let (base, count) = segments[segments.startIndex + segment]
            guard let base, doneInSegment < count else {
                segment += 1
                doneInSegment = 0
                continue
            }
            let n = min(count - doneInSegment, maxPayload)
            defer {
                doneInSegment += n
                position += UInt64(n)
            }
            return (base + doneInSegment, n, position)
        }
        isFinished = true
        return nil
    }

    private mutating func nextRange(_ offset: UInt64, _ length: UInt64) -> (UInt64, UInt64)? {
        guard done < length else {
            isFinished = true
            return nil
        }
        let n = min(length - done, NBDPiece.maxRangeLength)
        defer { done += n }
        return (offset + done, n)
    }
}

/// Where libnbd's completion callbacks leave their results. Callbacks run inside libnbd
/// calls the backend makes with its lock held, so this is only touched under that lock;
/// the backend drains it after each call.
final class NBDCompletionSink: @unchecked Sendable {
    struct Entry { let request: UInt64; let attempt: UInt32; let error: Int32 }
    var entries: [Entry] = []

    /// A callback for one piece of request `id` (attempt `attempt`); the token it carries
    /// is released by libnbd's `free` hook.
    func callback(request id: UInt64, attempt: UInt32) -> nbd_completion_callback {
        let token = Unmanaged.passRetained(NBDPieceToken(sink: self, request: id, attempt: attempt)).toOpaque()
        return nbd_completion_callback(
            callback: { userData, error in
                guard let userData else { return 1 }
                let token = Unmanaged<NBDPieceToken>.fromOpaque(userData).takeUnretainedValue()
                let e = error?.pointee ?? EIO
                token.sink.entries.append(Entry(request: token.request, attempt: token.attempt, error: e))
                return 1   // retire the command: nothing calls nbd_aio_command_completed
            },
            user_data: token,
            free: { userData in
                guard let userData else { return }
                Unmanaged<NBDPieceToken>.fromOpaque(userData).release()
            })
    }
}

final class NBDPieceToken {
    let sink: NBDCompletionSink
    let request: UInt64
    let attempt: UInt32
    init(sink: NBDCompletionSink, request: UInt64, attempt: UInt32) {
        self.sink = sink
        self.request = request
        self.attempt = attempt
    }
}
