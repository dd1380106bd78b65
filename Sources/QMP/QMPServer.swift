#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Logging
import Synchronization
import VMMBlock
import VMMCore
import VMMNet

/// A QMP server (QEMU's docs/interop/qmp-spec.rst) on a unix socket: greeting, capability
/// negotiation, commands with `return`/`error`, and asynchronous events with timestamps.
/// Clients are served one after another on the server's own thread; a client that sends
/// garbage, huge or deeply nested JSON, or leaves mid-command, only ends its own session.
public final class QMPServer: @unchecked Sendable {
    public let listener: UnixSocketListener
    let target: QMPTarget
    let links: NetworkLinks?
    let disks: BlockDisks?
    let descriptors: PassedFileDescriptors?
    private let logger: Logger
    private let stopFD: Int32
    private let wakeFD: Int32
    private var thread: pthread_t?
    /// Events waiting for the current client (bounded; the oldest are dropped).
    private let events = Mutex<(queue: [String], dropped: Int, negotiated: Bool)>(([], 0, false))
    static let eventQueueLimit = 256
    /// Bytes read per wakeup: a flood from one client cannot monopolise the thread.
    static let readChunk = 4096
    /// How long one reply or event may take to leave, in seconds.
    static let sendTimeout = 5.0
    /// How long a client that has not finished capabilities negotiation keeps the server
    /// once another client is waiting to connect. Clients are served one at a time, as
    /// QEMU's monitor serves them; without this a client that connects and says nothing
    /// would keep every other out for as long as it liked. Alone, a client may take its
    /// time (a person typing qmp_capabilities into socat), and a negotiated one keeps the
    /// session for good, as libvirt's does.
    static let negotiationGrace = 5.0

    public init(listener: UnixSocketListener, target: QMPTarget, links: NetworkLinks?, disks: BlockDisks? = nil,
                descriptors: PassedFileDescriptors? = nil, logger: Logger) throws(QMPError) {
        self.listener = listener; self.target = target; self.links = links; self.disks = disks
        self.descriptors = descriptors; self.logger = logger
        stopFD = eventfd(0, Int32(EFD_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard stopFD >= 0, wakeFD >= 0 else { throw .generic("eventfd: \(String(cString: strerror(errno)))") }
        DescriptorCloser.shared.start()
    }

    deinit { close(stopFD); close(wakeFD) }

    /// The socket file clients connect to.
    public var socketPath: String { listener.path }

    public func start() {
        // NIC_RX_FILTER_CHANGED (qapi/net.json), throttled by NetworkLinks: once per NIC
        // until the client reads its filter with query-rx-filter.
        links?.onReceiveFilterChanged { [weak self] name in
            self?.emit("NIC_RX_FILTER_CHANGED", data: .object([("name", .string(name)), ("path", .string("/machine/peripheral/\(name)"))]))
        }
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            ThreadConfinement.enter(.control)
            Unmanaged<QMPServer>.fromOpaque(arg).takeRetainedValue().serve()
            return nil
        }, box.toOpaque())
        thread = tid
    }

    /// Ends the session and the accept loop, joins the thread, removes the socket.
    public func stop() {
        _ = clinux_eventfd_signal(stopFD)
        if let t = thread, !pthread_equal(t, pthread_self()).isTrue { pthread_join(t, nil) }
        thread = nil
        listener.closeAndRemove()
    }

    /// Queues an event for the connected client (thread-safe). `data` is its `data` member.
    public func emit(_ event: String, data: JSONValue = .object([])) {
        var tv = timeval()
        gettimeofday(&tv, nil)
        let text = JSONValue.object([
            ("event", .string(event)), ("data", data),
            ("timestamp", .object([("seconds", .int(Int64(tv.tv_sec))), ("microseconds", .int(Int64(tv.tv_usec)))])),
        ]).serialized
        let queued = events.withLock { e -> Bool in
            guard e.negotiated else { return false }
            if e.queue.count >= Self.eventQueueLimit { e.queue.removeFirst(); e.dropped &+= 1 }
            e.queue.append(text)
            return true
        }
        if queued { _ = clinux_eventfd_signal(wakeFD) }
    }

    // MARK: Sessions

    private func serve() {
        while let fd = listener.accept(stopFD: stopFD) {
            // Non-blocking: `send` bounds the time a reply may take as a whole, so a client
            // that reads a byte at a time cannot hold the server (and its stop) for long.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            session(fd)
            let dropped = events.withLock { e -> Int in
                defer { e = ([], 0, false) }
                return e.dropped
            }
            if dropped > 0 {
                logger.warning("qmp: \(dropped) events were dropped for a client that did not read them (at most \(Self.eventQueueLimit) wait)")
            }
            DescriptorCloser.shared.close(fd)   // its queue may hold files the client sent
        }
    }

    private func session(_ fd: Int32) {
        let commands = QMPCommands(server: self)
        defer { commands.closeReceivedDescriptors() }
        guard send(fd, commands.greeting) else { return }
        var stream = QMPStream()
        var buffer = [UInt8](repeating: 0, count: Self.readChunk)
        // Set when another client starts waiting: the grace runs from then.
        var graceEnds: MonotonicDeadline?
        while true {
            var polls = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            var timeout: Int32 = -1
            if !commands.negotiated {
                if let graceEnds {
                    timeout = Int32(clamping: (Int64(clamping: graceEnds.nanoseconds) - Int64(clamping: MonotonicTime.nanoseconds())) / 1_000_000)
                    if timeout <= 0 {
                        logger.info("qmp: closing a client that did not negotiate within \(Int(Self.negotiationGrace)) s: another client waits")
                        _ = send(fd, QMPCommands.errorReply(.generic("capabilities negotiation not completed within \(Int(Self.negotiationGrace)) s while another client waits"), id: nil))
                        return
                    }
                } else {
                    // Readable once a client is queued to connect; then the grace runs out.
                    polls.append(pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0))
                }
            }
            if poll(&polls, nfds_t(polls.count), timeout) < 0 { if errno == EINTR { continue }; return }
            if polls.count > 3, polls[3].revents != 0 {
                graceEnds = MonotonicDeadline(secondsFromNow: Self.negotiationGrace)
                continue
            }
            // Events first: a SHUTDOWN queued just before the server stops still goes out.
            if polls[2].revents != 0 || polls[1].revents != 0 {
                var v: UInt64 = 0
                _ = read(wakeFD, &v, 8)
                let pending = events.withLock { e in defer { e.queue.removeAll() }; return e.queue }
                for text in pending { guard send(fd, text) else { return } }
            }
            if polls[1].revents != 0 { return }
            guard polls[0].revents != 0 else { continue }
            // Descriptors may come with the bytes (SCM_RIGHTS) for getfd/add-fd.
            var fds = [Int32](repeating: -1, count: Int(CLINUX_MAX_PASSED_FDS))
            var nfds: Int32 = 0, truncated: Int32 = 0
            let n = buffer.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return clinux_recv_with_fds(fd, base, raw.count, &fds, Int32(fds.count), &nfds, &truncated, 0)
            }
            commands.received(Array(fds.prefix(Int(max(0, min(nfds, Int32(fds.count)))))))
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else { return } // the client left
            for piece in stream.feed(buffer[0 ..< n]) {
                let reply: String?
                switch piece {
                case let .message(bytes): reply = commands.handle(bytes)
                case let .garbage(why): reply = QMPCommands.errorReply(.generic(why), id: nil)
                }
                if commands.negotiated { events.withLock { $0.negotiated = true } }
                if let reply, !send(fd, reply) { return }
                if commands.quitRequested {
                    // The platform stops the server soon; until then the session stays, so
                    // the SHUTDOWN event reaches the client before the socket closes.
                    commands.acknowledgeQuit()
                    target.quit()
                }
            }
        }
    }

    /// Sends one reply or event; false (the session ends) when the client has not taken
    /// it within `sendTimeout` seconds or the server is stopping while it waits.
    private func send(_ fd: Int32, _ text: String) -> Bool {
        let bytes = Array((text + "\r\n").utf8)
        let deadline = MonotonicDeadline(secondsFromNow: Self.sendTimeout)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return clinux_send_with_fds(fd, base + done, raw.count - done, nil, 0)
            }
            if n >= 0 { done += n; continue }
            guard errno == EINTR || errno == EAGAIN else { return false }
            if errno == EINTR { continue }
            let left = Int32(clamping: (Int64(clamping: deadline.nanoseconds) - Int64(clamping: MonotonicTime.nanoseconds())) / 1_000_000)
            guard left > 0 else { return false }
            switch StoppableWait.wait(fd, for: Int16(POLLOUT), orStop: stopFD, milliseconds: left) {
            case .ready, .timedOut: continue        // the deadline is checked on the next round
            case .stopped, .failed: return false
            }
        }
        return true
    }
}

extension Int32 { var isTrue: Bool { self != 0 } }

/// A QMP error: its class (qmp-spec.rst "Error") and a human-readable `desc`.
public enum QMPError: Error, Equatable, CustomStringConvertible {
    case generic(String)
    case commandNotFound(String)
    case deviceNotFound(String)

    public var errorClass: String {
        switch self {
        case .generic: "GenericError"
        case .commandNotFound: "CommandNotFound"
        case .deviceNotFound: "DeviceNotFound"
        }
    }

    public var description: String {
        switch self {
        case let .generic(d), let .commandNotFound(d), let .deviceNotFound(d): d
        }
    }
}
