#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// The host side of a console port (`ConsoleTarget`): what the guest writes goes out
/// here, what a connected client sends comes in. Every call is made with the device's
/// lock held; the I/O loop's handlers take it themselves.
///
/// Output never waits: a console driver spins until the device has taken its buffer
/// (Linux's `__send_to_port` for hvc), so bytes a client or file cannot take now are
/// dropped and counted, as QEMU's virtconsole drops them (`flush_buf` throttles only
/// non-console ports). Input is read only while the guest has buffers for it: the
/// client's socket is watched for reading then, so a fast client cannot fill memory.
final class ConsoleChannel: @unchecked Sendable {
    private let lock: DeviceLock
    private let loop: EventLoop
    private let clock: DeviceClock
    private let target: ConsoleTarget
    /// The output file (`file:`), and whether it was made here: a command line refused
    /// after this device was made leaves no file behind (`MachineStart`).
    private var fileFD: Int32 = -1
    private var createdFile = false
    private var machineStarted = false
    /// The listening socket and its path (`socket:`), removed at shutdown.
    private var listener: (fd: Int32, registration: IORegistration, path: String)?
    /// The connected client; its registration is nil while it is parked: it shut its
    /// sending side while the guest had no buffers, so the loop, which reports that
    /// (EPOLLRDHUP) for as long as it lasts, watches it no more until the guest wants
    /// input and what it sent can be read.
    private var client: (fd: Int32, registration: IORegistration?)?
    private var wantsInput = false
    /// Called on the loop with the lock held when the client has bytes and the guest
    /// wants input, and when a client connects.
    var inputReady: () -> Void = {}
    var clientConnected: () -> Void = {}

    /// Bytes the guest wrote that no one took, and clients that came.
    private(set) var droppedOutput: UInt64 = 0
    private(set) var connections: UInt64 = 0

    /// Out of descriptors, accept fails while the connection stays queued and the
    /// listener readable: the loop would spin on it, so it rests this long.
    private static let acceptRetryNanoseconds: UInt64 = 100_000_000
    private lazy var acceptRetry = DeviceTimer(clock: clock, lock: lock) { [weak self] in self?.resumeAccepting() }

    init(_ target: ConsoleTarget, lock: DeviceLock, loop: EventLoop, clock: DeviceClock,
         machineStart: MachineStart?) throws(OptionError) {
        self.lock = lock
        self.loop = loop
        self.clock = clock
        self.target = target
        switch target {
        case .none:
            break
        case let .file(path):
            switch OutputFile.open(path) {
            case let .success(opened):
                fileFD = opened.fd
                createdFile = opened.created
                // Appended, as a log: an existing file keeps what it has.
                _ = fcntl(fileFD, F_SETFL, fcntl(fileFD, F_GETFL) | O_APPEND)
            case .failure(.danglingLink):
                throw .badValue(key: "chardev", value: "file:\(path)", reason: "a symbolic link to a file that does not exist")
            case let .failure(.open(e)):
                throw .badValue(key: "chardev", value: "file:\(path)", reason: String(cString: strerror(e)))
            }
        case let .socket(path):
            let fd: Int32
            do {
                fd = try UnixSocketListener(path: path).handOver()
            } catch {
                throw .badValue(key: "chardev", value: "socket:\(path)", reason: error.description)
            }
            // Accepted on the loop: a client gone between readiness and accept must not block it.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            do {
                let registration = try loop.register(fd: fd, events: .readable) { [weak self] _ in self?.accept() }
                listener = (fd, registration, path)
            } catch {
                close(fd)
                unlink(path)
                throw .badValue(key: "chardev", value: "socket:\(path)", reason: "cannot watch it on the I/O loop: \(error)")
            }
        }
        if let machineStart {
            machineStart.whenStarted { [weak self] in self?.lock.withLock { self?.machineStarted = true } }
        } else {
            machineStarted = true
        }
    }

    var isConnected: Bool { client != nil }
    var isWaitingForInput: Bool { wantsInput }

    /// A parked client is not watched, so its closing is not reported: asked here (a
    /// non-blocking poll) so that the next client is not held in the backlog by one gone.
    func dropIfClosed() {
        guard let c = client, c.registration == nil else { return }
        var p = pollfd(fd: c.fd, events: 0, revents: 0)
        if poll(&p, 1, 0) > 0, p.revents & Int16(POLLHUP | POLLERR) != 0 { dropClient() }
    }

    /// Writes what it can of `bytes` now; the rest is dropped and counted. False when not
    /// all of it went: the rest of the guest's buffer is dropped too, so the client never
    /// sees a hole in the middle of one write.
    @discardableResult
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return true }
        var done = 0
        switch target {
        case .none:
            // No backend: consumed, as QEMU's flush_buf says of a port without a chardev.
            return true
        case .file:
            while done < bytes.count {
                let n = Glibc.write(fileFD, base + done, bytes.count - done)
                if n > 0 { done += n } else if n < 0, errno == EINTR { continue } else { break }
            }
        case .socket:
            guard let c = client else { break }
            while done < bytes.count {
                let n = send(c.fd, base + done, bytes.count - done, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if n > 0 { done += n; continue }
                if n < 0, errno == EINTR { continue }
                if n < 0, errno != EAGAIN { dropClient() }
                break
            }
        }
        droppedOutput &+= UInt64(bytes.count - done)
        return done == bytes.count
    }

    /// Counts output dropped without being tried (after a short write).
    func drop(_ count: Int) { droppedOutput &+= UInt64(count) }

    /// Reads what the client has into `buffer`: the byte count, 0 when there is nothing
    /// now (or no client; a client that left is let go).
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let c = client, let base = buffer.baseAddress, !buffer.isEmpty else { return 0 }
        while true {
            let n = recv(c.fd, base, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { return n }
            if n < 0, errno == EINTR { continue }
            if n == 0 || errno != EAGAIN { dropClient() }
            return 0
        }
    }

    /// Whether the guest has buffers for input: the client is watched for reading only then.
    func setWantsInput(_ wants: Bool) {
        guard wants != wantsInput else { return }
        wantsInput = wants
        guard let c = client else { return }
        if let registration = c.registration {
            loop.update(registration, events: events)
        } else if wants {
            watchClient(c.fd)   // parked: what it sent before it shut its side can be read now
        }
    }

    private var events: IOEvents { wantsInput ? [.readable, .hangup] : .hangup }

    /// On the loop: one client at a time. While one is connected the listener is not
    /// watched, so the next waits in the backlog and is taken when the first leaves, as
    /// QEMU's socket chardev does.
    func accept() {
        lock.withLock {
            guard let l = listener, client == nil else { return }
            let fd = Glibc.accept(l.fd, nil, nil)
            guard fd >= 0 else {
                let e = errno
                guard e != EAGAIN, e != EINTR, e != ECONNABORTED else { return }
                loop.update(l.registration, events: [])
                acceptRetry.arm(after: Self.acceptRetryNanoseconds)
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            client = (fd, nil)
            connections &+= 1
            loop.update(l.registration, events: [])
            watchClient(fd)
            if client != nil { clientConnected() }
        }
    }

    private func watchClient(_ fd: Int32) {
        do {
            let registration = try loop.register(fd: fd, events: events) { [weak self] ev in self?.clientReady(ev) }
            client = (fd, registration)
        } catch {
            dropClient()
        }
    }

    private func resumeAccepting() {
        if let l = listener, client == nil { loop.update(l.registration, events: .readable) }
    }

    private func clientReady(_ events: IOEvents) {
        lock.withLock {
            guard let c = client else { return }
            if wantsInput {
                // What it sent, as far as the guest has room; a client that left is let go
                // by the read that finds its end.
                inputReady()
            } else if !events.isDisjoint(with: .closed) {
                dropClient()
            } else if !events.isDisjoint(with: .hangup), let registration = c.registration {
                loop.unregister(registration)
                client = (c.fd, nil)
            }
        }
    }

    private func dropClient() {
        guard let c = client else { return }
        client = nil
        if let registration = c.registration { loop.unregister(registration) }
        close(c.fd)
        resumeAccepting()
    }

    /// The VM is going away: the client and listener close, the socket file goes.
    func shutdown() {
        acceptRetry.cancel()
        let l = listener
        listener = nil
        dropClient()
        if let l {
            loop.unregister(l.registration)
            close(l.fd)
            if ThreadConfinement.currentThreadMayRemoveFiles { unlink(l.path) }
        }
        if fileFD >= 0 {
            close(fileFD)
            fileFD = -1
            if case let .file(path) = target, createdFile, !machineStarted, ThreadConfinement.currentThreadMayRemoveFiles { unlink(path) }
        }
    }
}
