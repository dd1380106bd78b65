#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VMMCore
import VMMNet

/// `net=stream:…`: Ethernet frames over a Unix or TCP stream, each preceded by its length
/// as 4 big-endian bytes — the wire format of QEMU's `-netdev stream` and of passt — so a
/// swiftvmm guest can share a wire with a QEMU guest. A client reconnects with backoff
/// when the peer goes; a server (`server=on`) takes one peer at a time.
public final class StreamBackend: NetworkBackend, @unchecked Sendable {
    public static let maxFrameSize = 65_535
    /// Bytes of frames accepted while the socket was full; beyond this, sends are dropped.
    static let backlogLimit = 1 << 20
    static let connectTimeoutMilliseconds: Int32 = 5_000
    static let minimumBackoff: UInt64 = 100_000_000
    static let maximumBackoff: UInt64 = 5_000_000_000

    public let capabilities = BackendCapabilities(virtioNetHeader: false, offloads: [], maxFrameSize: StreamBackend.maxFrameSize)
    public let counters = BackendCounters()
    public let config: StreamConfig
    public var description: String { "stream:\(config.address)\(config.listen ? ",server=on" : "")" }
    public var isLinkUp: Bool { port.isLinkUp }
    /// In TCP server mode, the port actually bound (useful with port 0).
    public private(set) var boundPort: UInt16?

    private let loop: EventLoop
    private let clock: DeviceClock
    /// Where a client reconnects, tried in turn; empty for a socket handed over (it
    /// cannot be reopened).
    private let addresses: [SocketAddress]
    private let port: ReceiverPort
    private let decoder = LengthPrefixedDecoder(maxFrameSize: StreamBackend.maxFrameSize)
    /// A read continues in a later loop turn (`continueLater`); loop thread only.
    private var continuationQueued = false

    private struct State: @unchecked Sendable {
        private(set) var peer: Int32?
        /// Counts the peers this backend has had: a teardown queued for one peer must not
        /// close the next, which may have been given the same descriptor number.
        private(set) var peerGeneration: UInt64 = 0
        mutating func setPeer(_ fd: Int32?) {
            peer = fd
            if fd != nil { peerGeneration &+= 1 }
        }
        var peerRegistration: IORegistration?
        var backlog: [UInt8] = []
        var readPaused = false
        /// A failed send queued the peer's teardown on the loop.
        var goneQueued = false
        var listener: Int32?
        var listenerRegistration: IORegistration?
        /// A non-blocking connect in progress (client reconnect).
        var connecting: (fd: Int32, registration: IORegistration)?
        var reconnectTimer: TimerToken?
        var backoff = StreamBackend.minimumBackoff
        /// The address of `addresses` the next reconnect tries: the one that last
        /// worked, else the one after the one that last failed.
        var nextAddress = 0
        var started = false
        var stopped = false
        /// The Unix socket file this backend created (removed on stop).
        var ownedSocketPath: String?
    }
    private let state = Mutex(State())

    public convenience init(config: StreamConfig, eventLoop: EventLoop, clock: DeviceClock) throws(NetBackendError) {
        let option = "net", value = "stream:\(config.address)"
        let addresses: [SocketAddress]
        switch config.address {
        case let .unix(path):
            guard let a = SocketAddress(unixPath: path) else {
                throw .badValue(option: option, value: value, reason: "socket path longer than 107 bytes")
            }
            addresses = [a]
        case let .tcp(host, p):
            do { addresses = try SocketAddress.resolve(host: host, port: p, passive: config.listen) } catch {
                throw .badValue(option: option, value: value, reason: "cannot resolve '\(host)': \(error.reason)")
            }
        case .descriptor:
            throw .badValue(option: option, value: value, reason: "a handed-over socket is opened with StreamBackend(adopting:)")
        }
        try self.init(config: config, addresses: addresses, eventLoop: eventLoop, clock: clock)
    }

    /// Listens on the first of `addresses` that binds, or connects to the first that
    /// answers (and reconnects through them in turn).
    init(config: StreamConfig, addresses: [SocketAddress], eventLoop: EventLoop, clock: DeviceClock) throws(NetBackendError) {
        self.config = config
        loop = eventLoop
        self.clock = clock
        self.addresses = addresses
        port = ReceiverPort(counters: counters, linkUp: false)
        let option = "net", value = "stream:\(config.address)"
        if config.listen {
            let (fd, owned) = try StreamBackend.listen(on: addresses, config: config, option: option, value: value)
            state.withLock { $0.listener = fd; $0.ownedSocketPath = owned }
            boundPort = StreamBackend.localPort(of: fd)
        } else {
            let (fd, index) = try StreamBackend.connectNow(to: addresses, option: option, value: value)
            state.withLock { $0.setPeer(fd); $0.nextAddress = index }
            port.setLink(up: true)
        }
    }

    /// `net=stream-fd:N|NAME`: a connected stream socket opened by someone else (owned
    /// from now on). When its peer goes the link stays down: there is nothing to reconnect to.
    public init(adopting fd: Int32, label: String, eventLoop: EventLoop, clock: DeviceClock) throws(NetBackendError) {
        let value = "stream-fd:\(label)"
        guard fcntl(fd, F_GETFD) >= 0 else {
            throw .badValue(option: "net", value: value, reason: "file descriptor \(fd) is not open")
        }
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            close(fd)
            throw .badValue(option: "net", value: value, reason: "file descriptor \(fd) is not a stream socket")
        }
        // A listening socket has no peer to carry frames (its reads fail with ENOTCONN).
        var listening: Int32 = 0
        length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening != 0 {
            close(fd)
            throw .badValue(option: "net", value: value, reason: "file descriptor \(fd) is a listening socket; pass a connected one")
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        config = StreamConfig(address: .descriptor(label))
        loop = eventLoop
        self.clock = clock
        addresses = []
        port = ReceiverPort(counters: counters, linkUp: true)
        state.withLock { $0.setPeer(fd) }
    }

    deinit { stop() }

    // MARK: NetworkBackend

    public func start(receiver: FrameReceiver) {
        port.attach(receiver)
        state.withLock { s in
            s.started = true
            if let l = s.listener {
                s.listenerRegistration = try? loop.register(fd: l, events: .readable) { [weak self] _ in self?.acceptPeer() }
            }
            if let p = s.peer {
                s.peerRegistration = try? loop.register(fd: p, events: .readable) { [weak self] ev in self?.peerEvents(ev) }
            }
        }
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard let length = ScatterList.totalLength(segments), length <= StreamBackend.maxFrameSize else { return drop(.oversized) }
        guard length >= minimumFrameSize, segments.count < Int(maxIOVecs) else { return drop(.malformed) }
        var prefix = UInt32(length).bigEndian
        nonisolated(unsafe) let segments = segments
        let result: SendResult = withUnsafeBytes(of: &prefix) { prefixBytes in
            state.withLock { s -> SendResult in
                guard let fd = s.peer else { return .dropped(.linkDown) }
                let total = 4 + length
                if !s.backlog.isEmpty {
                    guard s.backlog.count + total <= StreamBackend.backlogLimit else { return .dropped(.wouldBlock) }
                    s.backlog.append(contentsOf: prefixBytes)
                    for seg in segments { s.backlog.append(contentsOf: seg) }
                    return .sent
                }
                var iov = [iovec](repeating: iovec(), count: segments.count + 1)
                iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: prefixBytes.baseAddress), iov_len: 4)
                for (i, seg) in segments.enumerated() {
                    iov[i + 1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: seg.baseAddress), iov_len: seg.count)
                }
                let n = iov.withUnsafeMutableBufferPointer { v -> Int in
                    var msg = msghdr()
                    msg.msg_iov = v.baseAddress
                    msg.msg_iovlen = v.count
                    return sendmsg(fd, &msg, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                }
                if n == total { return .sent }
                if n >= 0 {
                    // A partial write: the rest must follow before anything else or the
                    // peer loses the framing.
                    var skip = n
                    for part in [prefixBytes] + segments {
                        if skip >= part.count { skip -= part.count; continue }
                        s.backlog.append(contentsOf: part[skip...])
                        skip = 0
                    }
                    updateEvents(&s)
                    return .sent
                }
                let e = errno
                if ConnectionErrno.isTransient(e) { return .dropped(.wouldBlock) }
                // Once per peer: later failed sends find it queued.
                if !s.goneQueued {
                    s.goneQueued = true
                    let generation = s.peerGeneration
                    loop.execute { [weak self] in self?.peerGone(generation) }
                }
                return .dropped(.linkDown)
            }
        }
        counters.record(result, bytes: length)
        return result
    }

    public func resumeReceive() {
        loop.execute { [weak self] in
            guard let self, self.port.retry() else { return }
            guard self.deliverBuffered() else { return }
            self.state.withLock { s in
                s.readPaused = false
                self.updateEvents(&s)
            }
        }
    }

    /// No header, no offloads: nothing to configure.
    public func setReceiveOffloads(_: NetOffloads) {}

    public func stop() {
        state.withLock { s in
            guard !s.stopped else { return }
            s.stopped = true
            closePeer(&s)
            if let r = s.listenerRegistration { loop.unregister(r) }
            if let l = s.listener { close(l) }
            s.listener = nil
            s.listenerRegistration = nil
            if let c = s.connecting { loop.unregister(c.registration); close(c.fd) }
            s.connecting = nil
            if let t = s.reconnectTimer { clock.cancel(t) }
            s.reconnectTimer = nil
            // A live swap away from this backend stops it on the io-loop thread, which the
            // sandbox does not let remove files: the socket stays, stale, and the next
            // `server=on` at that path replaces it.
            if let path = s.ownedSocketPath, ThreadConfinement.currentThreadMayRemoveFiles { unlink(path) }
            s.ownedSocketPath = nil
        }
        port.detach()
    }

    // MARK: Loop thread

    private func drop(_ reason: DropReason) -> SendResult {
        counters.dropped(reason)
        return .dropped(reason)
    }

    private func updateEvents(_ s: inout State) {
        guard let reg = s.peerRegistration else { return }
        var events: IOEvents = s.readPaused ? [] : .readable
        if !s.backlog.isEmpty { events.insert(.writable) }
        loop.update(reg, events: events)
    }

    private func peerEvents(_ events: IOEvents) {
        if events.contains(.writable) { flushBacklog() }
        guard !events.isDisjoint(with: [.readable, .hangup]) else { return }
        // While a frame waits for the device nothing more is offered: it would take the
        // held frame's place, out of order. Reading resumes with `resumeReceive`. A
        // hang-up cannot be masked and would come back every loop turn, so the peer is
        // taken as gone now; what it sent after the held frame is lost, as on a cable pull.
        if port.isHolding {
            if !events.isDisjoint(with: .hangup) { peerGone() } else { pauseReading() }
            return
        }
        readPeer()
    }

    /// Frames and dropped records handled per readiness event at most: a peer streaming
    /// empty records (4 bytes each, ~32,000 per read) bought millions of them per event
    /// before, starving every other backend and timer on the loop.
    static let itemsPerEvent = 256

    private func readPeer() {
        var budget = StreamBackend.itemsPerEvent
        for _ in 0 ..< 64 {
            switch deliverBuffered(budget: &budget) {
            case .refused: return pauseReading()
            case .budgetSpent: return continueLater()
            case .drained: break
            }
            let space = decoder.readSpace()
            // Read under the lock `stop` closes the peer with (it may run on another
            // thread: `serve` stops devices on its main thread): the number cannot be
            // closed and given to another descriptor between the look and the read.
            guard let (n, error, generation) = state.withLock({ s -> (Int, Int32, UInt64)? in
                guard let fd = s.peer else { return nil }
                let n = recv(fd, space.baseAddress, space.count, Int32(MSG_DONTWAIT))
                return (n, errno, s.peerGeneration)
            }) else { return }
            if n == 0 { return peerGone(generation) }
            if n < 0 {
                if ConnectionErrno.isTransient(error) { return }
                return peerGone(generation)
            }
            decoder.didRead(n)
        }
        switch deliverBuffered(budget: &budget) {
        case .refused: pauseReading()
        case .budgetSpent: continueLater()
        case .drained: break
        }
    }

    /// What is already read waits in the decoder, where readiness will not report it:
    /// go on in a later turn of the loop, after the other work queued there.
    private func continueLater() {
        guard !continuationQueued else { return }
        continuationQueued = true
        loop.execute { [weak self] in
            guard let self else { return }
            self.continuationQueued = false
            guard !self.port.isHolding, self.state.withLock({ $0.peer != nil && !$0.readPaused }) else { return }
            self.readPeer()
        }
    }

    private enum Delivery { case drained, refused, budgetSpent }

    /// Offers the complete frames already read, while `budget` lasts (a frame or a
    /// dropped record spends one); drops are counted once per call.
    private func deliverBuffered(budget: inout Int) -> Delivery {
        var oversized = 0, empty = 0   // empty: records of no frame or less than a header
        defer {
            if oversized > 0 { counters.dropped(.oversized, count: oversized) }
            if empty > 0 { counters.dropped(.malformed, count: empty) }
        }
        while budget > 0 {
            budget -= 1
            switch decoder.next() {
            case let .frame(frame):
                // Shorter than an Ethernet header: malformed, as TAP and VDE count it.
                guard frame.count >= minimumFrameSize else { empty += 1; continue }
                if !port.offer(frame, header: nil) { return .refused }
            case .oversized: oversized += 1
            case .empty: empty += 1
            case .needMore: return .drained
            }
        }
        return .budgetSpent
    }

    /// Offers every complete frame already read (`resumeReceive`, bounded like a read).
    private func deliverBuffered() -> Bool {
        var budget = StreamBackend.itemsPerEvent
        switch deliverBuffered(budget: &budget) {
        case .refused: return false
        case .budgetSpent:
            continueLater()
            return true
        case .drained: return true
        }
    }

    private func pauseReading() {
        state.withLock { s in
            s.readPaused = true
            updateEvents(&s)
        }
    }

    private func flushBacklog() {
        let gone = state.withLock { s -> Bool in
            guard let fd = s.peer, !s.backlog.isEmpty else { return false }
            let n = s.backlog.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n < 0 { return !ConnectionErrno.isTransient(errno) }
            s.backlog.removeFirst(n)
            updateEvents(&s)
            return false
        }
        if gone { peerGone() }
    }

    private func closePeer(_ s: inout State) {
        if let r = s.peerRegistration { loop.unregister(r) }
        if let p = s.peer { close(p) }
        s.setPeer(nil)
        s.peerRegistration = nil
        s.backlog.removeAll()
        s.readPaused = false
        s.goneQueued = false
    }

    /// The peer of `generation` closed or failed (nil: whichever is connected): link down;
    /// a client retries, a server waits for the next peer. A notice about a peer already
    /// replaced (a send that failed before the loop took the next one) is ignored.
    private func peerGone(_ generation: UInt64? = nil) {
        let gone = state.withLock { s -> Bool in
            guard s.peer != nil, generation == nil || generation == s.peerGeneration else { return false }
            closePeer(&s)
            if !config.listen { scheduleReconnect(&s) }
            return true
        }
        guard gone else { return }
        decoder.reset()
        port.setLink(up: false)
    }

    private func acceptPeer() {
        // Under the lock `stop` closes the listener with, as a read of the peer is.
        guard let (fd, e) = state.withLock({ s -> (Int32, Int32)? in
            guard let listener = s.listener else { return nil }
            let fd = accept(listener, nil, nil)
            return (fd, errno)
        }) else { return }
        guard fd >= 0 else {
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED { return }
            // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS): the connection stays
            // queued and the listener readable, so the loop would spin on it. Try again later.
            state.withLock { s in if let r = s.listenerRegistration { loop.update(r, events: []) } }
            _ = clock.schedule(at: clock.now &+ StreamBackend.minimumBackoff) { [weak self] in
                guard let self else { return }
                self.loop.execute { [weak self] in self?.resumeListening() }
            }
            return
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        setNonBlocking(fd)
        adopt(fd)
    }

    private func resumeListening() {
        state.withLock { s in
            guard !s.stopped, let r = s.listenerRegistration else { return }
            loop.update(r, events: .readable)
        }
    }

    /// Makes `fd` the connected peer (only one at a time: a second is turned away).
    private func adopt(_ fd: Int32) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopped, s.peer == nil else { return false }
            s.setPeer(fd)
            s.backoff = StreamBackend.minimumBackoff
            if s.started {
                s.peerRegistration = try? loop.register(fd: fd, events: .readable) { [weak self] ev in self?.peerEvents(ev) }
            }
            return true
        }
        guard accepted else { close(fd); return }
        decoder.reset()
        port.setLink(up: true)
    }

    private func scheduleReconnect(_ s: inout State) {
        guard !s.stopped, s.reconnectTimer == nil, !addresses.isEmpty else { return }
        let delay = s.backoff
        s.backoff = min(s.backoff &* 2, StreamBackend.maximumBackoff)
        s.reconnectTimer = clock.schedule(at: clock.now &+ delay) { [weak self] in
            // A virtual clock fires timers on the stepping thread: hop to the loop.
            guard let self else { return }
            self.loop.execute { [weak self] in self?.tryReconnect() }
        }
    }

    private func tryReconnect() {
        let fd = state.withLock { s -> Int32? in
            s.reconnectTimer = nil
            guard !s.stopped, s.peer == nil, s.connecting == nil, addresses.indices.contains(s.nextAddress) else { return nil }
            let address = addresses[s.nextAddress]
            let fd = address.makeSocket()
            // An address family the host cannot open (::1 with IPv6 disabled) must not
            // hold the reconnects on it for good: the next address comes after it.
            guard fd >= 0 else { tryNextAddress(&s); return nil }
            let rc = address.withSockaddr { connect(fd, $0, $1) }
            if rc == 0 { return fd }
            guard errno == EINPROGRESS, let reg = try? loop.register(fd: fd, events: .writable, { [weak self] _ in self?.connectFinished() }) else {
                close(fd)
                tryNextAddress(&s)
                return nil
            }
            s.connecting = (fd, reg)
            return nil
        }
        if let fd { adopt(fd) }
    }

    /// A reconnect to one address failed: the next one is tried after the backoff (a
    /// name's addresses in turn, each failure doubling the wait).
    private func tryNextAddress(_ s: inout State) {
        s.nextAddress = addresses.isEmpty ? 0 : (s.nextAddress + 1) % addresses.count
        scheduleReconnect(&s)
    }

    private func connectFinished() {
        let fd = state.withLock { s -> Int32? in
            guard let c = s.connecting else { return nil }
            s.connecting = nil
            loop.unregister(c.registration)
            var error: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0, error == 0 { return c.fd }
            close(c.fd)
            tryNextAddress(&s)
            return nil
        }
        if let fd { adopt(fd) }
    }

    // MARK: Opening

    private static func localPort(of fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard rc == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
        case AF_INET6: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
        default: return nil
        }
    }

    /// Connects now to the first of `addresses` that answers, waiting up to 5 s for each:
    /// a peer that is not there is a configuration error (the last address's reason).
    /// Returns the socket and the index of the address it reached.
    private static func connectNow(to addresses: [SocketAddress], option: String, value: String)
        throws(NetBackendError) -> (Int32, Int) {
        try firstSucceeding(addresses, option: option, value: value) { a throws(NetBackendError) in
            try connectNow(to: a, option: option, value: value)
        }
    }

    /// What `attempt` gives for the first of `addresses` it succeeds on, and that address's
    /// index; else the last address's failure.
    private static func firstSucceeding<T>(_ addresses: [SocketAddress], option: String, value: String,
                                           _ attempt: (SocketAddress) throws(NetBackendError) -> T) throws(NetBackendError) -> (T, Int) {
        var failure = NetBackendError.badValue(option: option, value: value, reason: "no address")
        for (index, address) in addresses.enumerated() {
            do {
                return (try attempt(address), index)
            } catch {
                failure = error
            }
        }
        throw failure
    }

    private static func connectNow(to address: SocketAddress, option: String, value: String) throws(NetBackendError) -> Int32 {
        let fd = address.makeSocket()
        guard fd >= 0 else { throw .system(option: option, value: value, call: "socket", errno: errno, hint: nil) }
        var rc = address.withSockaddr { connect(fd, $0, $1) }
        if rc != 0, errno == EINPROGRESS {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            rc = poll(&pfd, 1, connectTimeoutMilliseconds) == 1 ? 0 : -1
            var error: Int32 = rc == 0 ? 0 : ETIMEDOUT
            var len = socklen_t(MemoryLayout<Int32>.size)
            if rc == 0 { getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) }
            if error != 0 { errno = error; rc = -1 }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw .system(option: option, value: value, call: "connect", errno: e,
                          hint: "is the peer listening? use server=on to listen instead")
        }
        return fd
    }

    /// Binds and listens. A Unix socket follows the rules of every socket the VMM listens
    /// on (`UnixSocketListener`): mode 0600, a path that is not a socket refused, one a live
    /// process answers on refused, a stale one replaced; the path is returned to be
    /// removed at stop.
    private static func listen(on addresses: [SocketAddress], config: StreamConfig, option: String, value: String)
        throws(NetBackendError) -> (Int32, String?) {
        if case let .unix(path) = config.address {
            let listener: UnixSocketListener
            do {
                listener = try UnixSocketListener(path: path)
            } catch {
                throw .badValue(option: option, value: value, reason: error.description)
            }
            // Accepted from the I/O loop: a client gone between readiness and accept must
            // not block it.
            let fd = listener.handOver()
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            return (fd, listener.path)
        }
        // The first address that binds, as QEMU's `inet_listen_saddr` does ("::" or
        // "0.0.0.0" for an empty host; a name's addresses in order).
        let (fd, _) = try firstSucceeding(addresses, option: option, value: value) { a throws(NetBackendError) in
            try listen(on: a, option: option, value: value)
        }
        return (fd, nil)
    }

    private static func listen(on address: SocketAddress, option: String, value: String) throws(NetBackendError) -> Int32 {
        let fd = address.makeSocket()
        guard fd >= 0 else { throw .system(option: option, value: value, call: "socket", errno: errno, hint: nil) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard address.withSockaddr({ bind(fd, $0, $1) }) == 0 else {
            let e = errno
            close(fd)
            throw .system(option: option, value: value, call: "bind", errno: e, hint: nil)
        }
        guard Glibc.listen(fd, 1) == 0 else {
            let e = errno
            close(fd)
            throw .system(option: option, value: value, call: "listen", errno: e, hint: nil)
        }
        return fd
    }
}
