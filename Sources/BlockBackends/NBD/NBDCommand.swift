#if canImport(Glibc)
import Glibc
#endif
import CNBD
import VMMBlock

/// One libnbd command: a request becomes one or more (a scatter list is one read or
/// write per segment, zero-copy into guest memory; anything longer than the server's
/// payload limit or NBD's 32-bit lengths is split).
enum NBDPiece {
    case read(UnsafeMutableRawPointer, count: Int, offset: UInt64)
    case write(UnsafeRawPointer, count: Int, offset: UInt64)
    case flush
    case trim(count: UInt64, offset: UInt64)
    case zero(count: UInt64, offset: UInt64, noHole: Bool)

    /// Trim and zero lengths are 32-bit on the wire; stay well inside, block aligned.
    static let maxRangeLength: UInt64 = 1 << 30

    /// The commands for `request`, or nil when its ranges overflow (the device checked
    /// them; this only keeps arithmetic from trapping).
    static func split(_ request: BlockRequest, maxPayload: Int) -> [NBDPiece]? {
        var pieces: [NBDPiece] = []
        switch request {
        case let .read(offset, segments):
            var position = offset
            for s in segments where s.count > 0 {
                guard let base = s.baseAddress else { continue }
                var done = 0
                while done < s.count {
                    let n = min(s.count - done, maxPayload)
                    pieces.append(.read(base + done, count: n, offset: position))
                    guard let next = ScatterList.end(offset: position, length: n) else { return nil }
                    position = next
                    done += n
                }
            }
        case let .write(offset, segments):
            var position = offset
            for s in segments where s.count > 0 {
                guard let base = s.baseAddress else { continue }
                var done = 0
                while done < s.count {
                    let n = min(s.count - done, maxPayload)
                    pieces.append(.write(base + done, count: n, offset: position))
                    guard let next = ScatterList.end(offset: position, length: n) else { return nil }
                    position = next
                    done += n
                }
            }
        case .flush:
            pieces.append(.flush)
        case let .discard(offset, length):
            guard let ranges = ranges(offset: offset, length: length) else { return nil }
            pieces = ranges.map { .trim(count: $0.count, offset: $0.offset) }
        case let .writeZeroes(offset, length, mayUnmap):
            guard let ranges = ranges(offset: offset, length: length) else { return nil }
            pieces = ranges.map { .zero(count: $0.count, offset: $0.offset, noHole: !mayUnmap) }
        }
        return pieces
    }

    private static func ranges(offset: UInt64, length: UInt64) -> [(offset: UInt64, count: UInt64)]? {
        guard offset.addingReportingOverflow(length).overflow == false else { return nil }
        var out: [(UInt64, UInt64)] = []
        var done: UInt64 = 0
        while done < length {
            let n = min(length - done, maxRangeLength)
            out.append((offset + done, n))
            done += n
        }
        return out
    }

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
