#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import VMMCore

/// The guest's console bytes on their way to the host: the vCPU that writes the UART's
/// THR appends to a bounded buffer without a system call, and the I/O loop writes the
/// buffer out without blocking. A reader that is slow or stopped (`swiftvmm run | less`,
/// a supervisor that stopped reading) fills the buffer, and bytes past it are dropped and
/// counted; before, the vCPU blocked in write(2) holding the UART's lock, and a stop
/// signal could no longer end the VMM (the write was retried after every kick).
final class ConsoleOutput: @unchecked Sendable {
    static let capacity = 64 * 1024
    /// Bytes written per turn of the loop at most (the buffer's size: bounded work).
    static let chunk = 16 * 1024

    private enum Kind { case pollable, socket, regularFile }

    private struct Buffer {
        var bytes = [UInt8](repeating: 0, count: ConsoleOutput.capacity)
        var head = 0
        var count = 0
        var dropped: UInt64 = 0
        /// A flush is queued on the loop or waits for the descriptor to become writable.
        var flushPending = false
        /// The reader went away (EPIPE and the like): later bytes are dropped.
        var closed = false
    }

    private let fd: Int32
    private let kind: Kind
    private let logger: Logger
    private let buffer = Mutex(Buffer())
    /// Set before the vCPUs start and cleared after they stopped.
    private var loop: EventLoop?
    /// Touched only on the loop (and after it stopped, by `finish`).
    private var registration: IORegistration?
    /// What one write takes out of the buffer: copied under the lock, written outside it,
    /// so a vCPU appending never waits for a system call.
    private var outgoing = [UInt8](repeating: 0, count: ConsoleOutput.chunk)

    /// `fd` is the caller's and stays open; writes go through a descriptor of our own
    /// that is non-blocking: a new open file description of the same pipe or terminal
    /// (through /proc/self/fd), so the O_NONBLOCK flag does not reach the terminal the
    /// shell shares; a socket is written with MSG_DONTWAIT instead, and a regular file
    /// (`--serial file:`) never blocks for long.
    init(fd: Int32, logger: Logger) {
        self.logger = logger
        var st = stat()
        let isRegular = fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFREG
        let isSocket = !isRegular && st.st_mode & S_IFMT == S_IFSOCK
        if isRegular {
            self.fd = dup(fd)
            kind = .regularFile
        } else if isSocket {
            self.fd = dup(fd)
            kind = .socket
        } else {
            // Without /proc the shared description stays blocking (O_NONBLOCK on it would
            // reach the shell's terminal): a full reader then holds the loop, never a vCPU.
            let own = open("/proc/self/fd/\(fd)", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            self.fd = own >= 0 ? own : dup(fd)
            kind = .pollable
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    var droppedBytes: UInt64 { buffer.withLock { $0.dropped } }

    /// From here on the loop writes the buffer out (bytes that came before go out now).
    func attach(to loop: EventLoop) {
        self.loop = loop
        let schedule = buffer.withLock { b -> Bool in
            guard b.count > 0, !b.flushPending else { return false }
            b.flushPending = true
            return true
        }
        if schedule { loop.execute { [weak self] in self?.flush() } }
    }

    /// One guest byte (any thread; no system call).
    func append(_ byte: UInt8) {
        let schedule = buffer.withLock { b -> Bool in
            guard !b.closed, b.count < Self.capacity else {
                b.dropped &+= 1
                return false
            }
            b.bytes[(b.head + b.count) % Self.capacity] = byte
            b.count += 1
            guard !b.flushPending, loop != nil else { return false }
            b.flushPending = true
            return true
        }
        if schedule, let loop { loop.execute { [weak self] in self?.flush() } }
    }

    /// On the loop: writes what is buffered, at most `chunk` bytes a system call and the
    /// buffer's size a turn; waits for the descriptor to be writable when it is full.
    private func flush() {
        var written = 0
        while written < Self.capacity {
            let length = takeChunk()
            guard length > 0 else {
                stopWaitingForRoom()
                return
            }
            let n = writeOutgoing(length)
            if n > 0 {
                consume(n)
                written += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), kind != .regularFile {
                waitForRoom()
                return
            }
            // The reader is gone (EPIPE), or the output failed: the guest's bytes go nowhere.
            let e = errno
            buffer.withLock { b in
                b.closed = true
                b.dropped &+= UInt64(b.count)
                b.count = 0
                b.flushPending = false
            }
            stopWaitingForRoom()
            logger.warning("serial output stopped: \(String(cString: strerror(e))); later guest output is dropped")
            return
        }
        // A full buffer's worth this turn: continue on the next one, after other work.
        loop?.execute { [weak self] in self?.flush() }
    }

    /// Copies the next bytes (at most `chunk`, up to the buffer's wrap) into `outgoing`;
    /// 0 when there is nothing to write, which also ends the pending flush.
    private func takeChunk() -> Int {
        buffer.withLock { b -> Int in
            guard b.count > 0, !b.closed else {
                b.flushPending = false
                return 0
            }
            let length = min(b.count, Self.capacity - b.head, Self.chunk)
            outgoing.withUnsafeMutableBytes { out in
                b.bytes.withUnsafeBytes { src in
                    out.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[b.head ..< b.head + length]))
                }
            }
            return length
        }
    }

    private func consume(_ n: Int) {
        buffer.withLock { b in
            b.head = (b.head + n) % Self.capacity
            b.count -= n
        }
    }

    private func writeOutgoing(_ length: Int) -> Int {
        outgoing.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            switch kind {
            case .socket: return send(fd, base, length, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            case .pollable, .regularFile: return write(fd, base, length)
            }
        }
    }

    private func waitForRoom() {
        guard let loop else { return }
        if let registration {
            loop.update(registration, events: .writable)
        } else {
            registration = try? loop.register(fd: fd, events: .writable) { [weak self] _ in self?.flush() }
            if registration == nil { loop.execute { [weak self] in self?.flush() } }   // cannot be watched: try again next turn
        }
    }

    /// Out of the loop, not merely watched for nothing: epoll reports an error or hang-up
    /// whatever the mask, and a reader that left (`| less`, then q) would wake the loop
    /// on every turn for the rest of the VM's life.
    private func stopWaitingForRoom() {
        guard let loop, let registration else { return }
        loop.unregister(registration)
        self.registration = nil
    }

    /// After the loop stopped: what is left goes out if the reader takes it within about
    /// a second (a VM that ends with a line still buffered prints it), then the rest is dropped.
    func finish() {
        if let registration, let loop { loop.unregister(registration) }
        registration = nil
        loop = nil
        let deadline = MonotonicDeadline(secondsFromNow: 1)
        while MonotonicTime.nanoseconds() < deadline.nanoseconds {
            let length = takeChunk()
            guard length > 0 else { break }
            let n = writeOutgoing(length)
            if n > 0 {
                consume(n)
            } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 50)
            } else {
                break
            }
        }
        buffer.withLock { b in
            b.dropped &+= UInt64(b.count)
            b.count = 0
            b.closed = true
        }
    }
}
