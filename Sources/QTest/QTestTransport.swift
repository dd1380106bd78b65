#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// Errors setting up the qtest transport (user input: a socket path).
public enum QTestTransportError: Error, CustomStringConvertible {
    case socket(path: String, call: String, errno: Int32)
    case listener(UnixSocketListenerError)
    public var description: String {
        switch self {
        case let .socket(p, call, e): "--socket \(p): \(call) failed: \(String(cString: strerror(e)))"
        case let .listener(e): "--socket: \(e)"
        }
    }
}

/// Runs a qtest session over file descriptors: stdin/stdout, or one client of a unix socket.
public enum QTestTransport {
    /// Reads request lines from `input` until end of file, or until `stop` (a descriptor
    /// that becomes readable when the session must end, such as an eventfd the caller
    /// signals on SIGTERM; -1 for none), answering on `output`. QEMU's libqtest ends every
    /// session with SIGTERM (`qtest_quit`), so a stop ends the session here and the
    /// caller's teardown runs, as at end of file. Each read's bytes are searched once for
    /// newlines (a line arriving in 4 KiB pieces is not rescanned from its start), and a
    /// line longer than `maxLineLength` is dropped as it comes, so a peer that never sends
    /// a newline costs linear time and at most `maxLineLength` + 4 KiB of memory.
    ///
    /// A socket client is served non-blocking: an answer or IRQ report that makes no
    /// progress for `stallLimit` seconds (a client that stopped reading) ends the session,
    /// instead of blocking the thread that sends it, which may be the I/O loop reporting
    /// an interrupt with the device lock held. Stdio stays blocking (it is the caller's);
    /// a write there waits for room or for `stop` (`writeAll`).
    public static func serve(machine: QTestMachine, input: Int32, output: Int32, stop: Int32 = -1) {
        let isSocket = socketType(output)
        if isSocket { _ = fcntl(output, F_SETFL, fcntl(output, F_GETFL) | O_NONBLOCK) }
        let server = QTestServer(machine: machine) { line in
            if !writeAll(output, line, giveUpAfter: isSocket ? stallLimit : nil, stop: stop) {
                // The reader stopped or left, or the session was stopped: end the session
                // (the read loop sees EOF or the stop).
                shutdown(output, Int32(SHUT_RDWR))
            }
        }
        var pending: [UInt8] = []
        var discarding = false // inside a line that was too long: drop it up to its newline
        var buffer = [UInt8](repeating: 0, count: 4096)
        while StoppableWait.wait(input, for: Int16(POLLIN), orStop: stop) == .ready {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else { break }
            let scanFrom = pending.count   // what was there before holds no newline
            pending.append(contentsOf: buffer[0 ..< n])
            var start = 0
            while let nl = pending[max(start, scanFrom)...].firstIndex(of: UInt8(ascii: "\n")) {
                if discarding {
                    discarding = false
                    server.reject("FAIL request longer than \(maxLineLength) bytes")
                } else {
                    server.handle(line: Substring(String(decoding: pending[start ..< nl], as: UTF8.self)))
                }
                start = nl + 1
            }
            pending.removeSubrange(..<start)
            if discarding || pending.count > maxLineLength {
                pending.removeAll(keepingCapacity: true)
                discarding = true
            }
        }
    }

    /// The longest sensible request: a `write` of `QTestServer.maxTransfer` bytes in hex.
    static let maxLineLength = Int(QTestServer.maxTransfer) * 2 + 64

    /// A listening unix socket for one qtest client. Made before the sandbox is on (its
    /// lists allow `accept`, not `socket` or `bind`); the socket file is removed once the
    /// client is in (as QEMU's libqtest does with its own), or when the listener goes. An
    /// existing path that is not a socket, or a socket someone listens on, is refused
    /// (`UnixSocketListener`): it was replaced, whatever it held.
    public final class Listener {
        private let socket: UnixSocketListener

        public init(path: String) throws(QTestTransportError) {
            do { socket = try UnixSocketListener(path: path) } catch { throw .listener(error) }
        }

        /// Waits for the client, or returns nil once `stopFD` is readable (a stop signal
        /// through a signalfd); the listening socket and its file are gone afterwards.
        public func acceptClient(stopFD: Int32) throws(QTestTransportError) -> Int32? {
            defer { socket.closeAndRemove() }
            guard let client = socket.accept(stopFD: stopFD) else {
                let e = errno
                if StoppableWait.wait(-1, for: 0, orStop: stopFD, milliseconds: 0) == .stopped { return nil }
                throw .socket(path: socket.path, call: "accept", errno: e)
            }
            return client
        }
    }

    /// Seconds an answer may make no progress before the session ends.
    static let stallLimit = 5.0

    private static func socketType(_ fd: Int32) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK
    }

    /// Writes `text` whole; false when the reader is gone, when `stop` became readable
    /// (the session is ending), or (with `giveUpAfter`, given for sockets) when nothing
    /// could be written for that many seconds. Each write waits in `poll` for room first,
    /// so a reader that stops reading never holds the writer past a stop; on blocking
    /// stdio the pieces are at most PIPE_BUF bytes, which a pipe with room takes without
    /// blocking.
    @discardableResult
    static func writeAll(_ fd: Int32, _ text: String, giveUpAfter stall: Double? = nil, stop: Int32 = -1) -> Bool {
        let bytes = Array(text.utf8)
        var done = 0
        var deadline = stall.map { MonotonicDeadline(secondsFromNow: $0) }
        while done < bytes.count {
            var timeout: Int32 = -1
            if let deadline {
                let left = (Int64(clamping: deadline.nanoseconds) - Int64(clamping: MonotonicTime.nanoseconds())) / 1_000_000
                guard left > 0 else { return false }
                timeout = Int32(clamping: left)
            }
            switch StoppableWait.wait(fd, for: Int16(POLLOUT), orStop: stop, milliseconds: timeout) {
            case .ready: break
            case .timedOut: continue   // the deadline is checked above
            case .stopped, .failed: return false
            }
            let n = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                // A socket's peer gone is EPIPE, not SIGPIPE (which would end the process).
                return stall == nil ? write(fd, base + done, min(raw.count - done, Int(PIPE_BUF)))
                    : send(fd, base + done, raw.count - done, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                done += n
                deadline = stall.map { MonotonicDeadline(secondsFromNow: $0) }
                continue
            }
            if n < 0, errno == EINTR || errno == EAGAIN { continue }
            return false   // the reader went away
        }
        return true
    }
}
