#if canImport(Glibc)
import Glibc
#endif
import CSlirp
import Logging
import Synchronization
import VMMCore
import VMMNet

/// `net=user`: unprivileged NAT networking through libslirp (the role vpnkit plays for
/// hyperkit): DHCP, DNS forwarding, outgoing TCP/UDP through host sockets, `hostfwd=`
/// rules. libslirp is single-threaded: every call into it holds `lock`; its sockets sit in
/// a private epoll set on the VM's I/O loop and its timers run on the device clock.
/// Frames libslirp emits are collected while the lock is held and handed to the device
/// after it is released, so the device's lock is never taken under ours.
public final class UserBackend: NetworkBackend, @unchecked Sendable {
    public let config: UserNetworkConfig
    public let capabilities: BackendCapabilities
    public let counters = BackendCounters()
    public var description: String { "user(\(config.network)/\(config.prefixLength))" }
    /// A NAT has no cable to pull.
    public var isLinkUp: Bool { true }

    /// Frames the device did not take yet; more than this and new ones are dropped (a NAT's
    /// TCP retransmits, as libslirp expects of a busy guest).
    static let receiveQueueLimit = 256
    /// Frames sent by the guest and not yet given to libslirp on the loop, those the loop
    /// is handing over included. Beyond this the backend drops (counted as would-block):
    /// a guest that sends faster than the loop runs must not grow a queue without bound
    /// (issue 12).
    static let transmitQueueLimit = 1024
    /// Emptied frame buffers kept for the next sends: at most this many, and only those
    /// of a standard frame's size (a jumbo frame's buffer is let go), so the spares hold
    /// at most 1 MiB.
    static let spareBufferLimit = 256
    static let spareBufferCapacity = 4096
    /// Frames handed to libslirp between deliveries of its answers to the device: its
    /// replies to a whole queue at once would overrun `receiveQueueLimit`.
    static let handOverChunk = 64

    /// The guest's frames on their way to libslirp, which runs on the loop. A send copies
    /// its frame into a buffer an earlier frame left and wakes the loop only when the
    /// queue was empty; the loop hands the queued frames to libslirp in chunks (one lock,
    /// one re-arm of the poll set and one delivery of libslirp's answers per chunk). It
    /// was a new array, a closure and a loop wake-up per frame, and a re-arm per frame.
    private struct Outgoing {
        var frames: [[UInt8]] = []
        /// Frames the loop took and has not finished handing over (they count toward the limit).
        var inFlight = 0
        var spare: [[UInt8]] = []
    }
    private let outgoing = Mutex(Outgoing())
    /// The frames the loop is handing over (loop thread only), swapped with the queue's.
    private nonisolated(unsafe) var handingOver: [[UInt8]] = []

    private let loop: EventLoop
    private let clock: DeviceClock
    private let port: ReceiverPort
    private let guestLog = RateLimitedLogger(Logger(label: "swiftvmm.net.user"))

    /// Serialises every libslirp call; the fields below are only touched with it held
    /// (libslirp's callbacks run inside those calls).
    private let lock = Mutex<Void>(())
    private nonisolated(unsafe) var slirp: OpaquePointer?
    private nonisolated(unsafe) var outbox: [[UInt8]] = []
    private nonisolated(unsafe) let pollSet: SlirpPollSet
    private nonisolated(unsafe) var pollTimer: (token: TimerToken, deadline: UInt64)?
    private nonisolated(unsafe) var timers: [ObjectIdentifier: SlirpTimer] = [:]
    private nonisolated(unsafe) var flowGuard = SlirpFlowGuard()
    private let callbacks: UnsafeMutablePointer<SlirpCb>

    private let receiveQueue = Mutex<[[UInt8]]>([])
    private let registration = Mutex<IORegistration?>(nil)

    /// The host sockets libslirp holds: for the guest's flows, and for connections it
    /// accepted on `hostfwd` listeners (`SlirpFlowGuard`).
    var hostSocketCounts: (guest: Int, forwarded: Int) {
        lock.withLock { _ in (flowGuard.hostSockets, flowGuard.forwardedConnections.count) }
    }

    public convenience init(config: UserNetworkConfig, eventLoop: EventLoop, clock: DeviceClock) throws(NetBackendError) {
        try self.init(config: config, eventLoop: eventLoop, clock: clock, forwardedConnectionLimit: SlirpFlowGuard.forwardedConnectionLimit)
    }

    init(config: UserNetworkConfig, eventLoop: EventLoop, clock: DeviceClock, forwardedConnectionLimit: Int) throws(NetBackendError) {
        flowGuard.forwardedLimit = forwardedConnectionLimit
        self.config = config
        capabilities = BackendCapabilities(virtioNetHeader: false, offloads: [], maxFrameSize: config.mtu + 14)
        loop = eventLoop
        self.clock = clock
        port = ReceiverPort(counters: counters, linkUp: true)
        guard let set = SlirpPollSet() else {
            throw .system(option: "net", value: "user", call: "epoll_create1", errno: errno, hint: nil)
        }
        pollSet = set
        callbacks = .allocate(capacity: 1)
        callbacks.initialize(to: UserBackend.makeCallbacks())

        var cfg = SlirpConfig()
        cfg.version = 4
        cfg.in_enabled = true
        cfg.vnetwork = config.network.inAddr
        cfg.vnetmask = IPv4Address(config.netmask).inAddr
        cfg.vhost = config.host.inAddr
        cfg.vdhcp_start = config.dhcpStart.inAddr
        cfg.vnameserver = config.dns.inAddr
        // QEMU's IPv6 defaults: fec0::/64, host fec0::2, DNS fec0::3.
        cfg.in6_enabled = config.ipv6
        inet_pton(AF_INET6, "fec0::", &cfg.vprefix_addr6)
        cfg.vprefix_len = 64
        inet_pton(AF_INET6, "fec0::2", &cfg.vhost6)
        inet_pton(AF_INET6, "fec0::3", &cfg.vnameserver6)
        cfg.if_mtu = config.mtu
        cfg.if_mru = config.mtu
        // 10.0.2.2 reaches the host's loopback, as in QEMU (the hostfwd and test path).
        cfg.disable_host_loopback = false
        cfg.enable_emu = false

        let opaque = Unmanaged.passUnretained(self).toOpaque()
        let created: OpaquePointer? = lock.withLock { _ in
            slirp = slirp_new(&cfg, callbacks, opaque)
            return slirp
        }
        guard let created else {
            // Fully initialised: deinit releases the callbacks.
            throw .system(option: "net", value: "user", call: "slirp_new", errno: EINVAL, hint: nil)
        }
        for rule in config.forwards {
            let guest = rule.guestAddress ?? config.dhcpStart
            let rc = lock.withLock { _ in
                slirp_add_hostfwd(created, rule.proto == .udp ? 1 : 0, rule.hostAddress.inAddr, Int32(rule.hostPort),
                                  guest.inAddr, Int32(rule.guestPort))
            }
            if rc < 0 {
                stop()
                throw .hostForwardRefused(rule: rule.rule)
            }
        }
    }

    deinit {
        stop()
        callbacks.deinitialize(count: 1)
        callbacks.deallocate()
    }

    // MARK: NetworkBackend

    public func start(receiver: FrameReceiver) {
        port.attach(receiver)
        let reg = try? loop.register(fd: pollSet.epollFD, events: .readable) { [weak self] _ in self?.cycle(poll: true) }
        registration.withLock { $0 = reg }
        loop.execute { [weak self] in self?.cycle(poll: false) }
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard let length = ScatterList.totalLength(segments), length <= capabilities.maxFrameSize else { return drop(.oversized) }
        guard length >= minimumFrameSize else { return drop(.malformed) }
        nonisolated(unsafe) let segments = segments
        let wake = outgoing.withLock { q -> Bool? in
            guard q.frames.count + q.inFlight < UserBackend.transmitQueueLimit else { return nil }
            var frame = q.spare.popLast() ?? []
            frame.removeAll(keepingCapacity: true)
            frame.reserveCapacity(length)   // exactly: appending segment by segment would double it
            for segment in segments { frame.append(contentsOf: segment) }
            q.frames.append(frame)
            return q.frames.count == 1
        }
        guard let wake else { return drop(.wouldBlock) }
        if wake { loop.execute { [weak self] in self?.handOverQueued() } }
        // Counted when libslirp takes it (`handOverQueued`): the flow guard may still
        // drop it, and a frame is counted once, sent or dropped.
        return .sent
    }

    public func resumeReceive() {
        loop.execute { [weak self] in
            guard let self, self.port.retry() else { return }
            self.drainReceiveQueue()
        }
    }

    public func setReceiveOffloads(_: NetOffloads) {}

    public func stop() {
        if let reg = registration.withLock({ r -> IORegistration? in defer { r = nil }; return r }) { loop.unregister(reg) }
        lock.withLock { _ in
            guard let s = slirp else { return }
            // Closes every socket (hostfwd listeners included) and frees the timers through the callbacks.
            slirp_cleanup(s)
            slirp = nil
            if let t = pollTimer { clock.cancel(t.token) }
            pollTimer = nil
            for t in timers.values {
                if let token = t.token { clock.cancel(token) }
                t.freed = true
            }
            timers.removeAll()
            for _ in outbox { counters.dropped(.linkDown) }
            outbox.removeAll()
        }
        // What was still on its way either side is lost with the backend: counted.
        receiveQueue.withLock { q in
            for _ in q { counters.dropped(.linkDown) }
            q.removeAll()
        }
        outgoing.withLock { q in
            for _ in q.frames { counters.dropped(.linkDown) }
            q = Outgoing()
        }
        port.detach()
    }

    // MARK: Loop thread

    private func drop(_ reason: DropReason) -> SendResult {
        counters.dropped(reason)
        return .dropped(reason)
    }

    /// Gives libslirp every frame the guest queued, a chunk at a time, each followed by
    /// the device getting what libslirp answered.
    private func handOverQueued() {
        outgoing.withLock { q in
            swap(&q.frames, &handingOver)
            q.inFlight = handingOver.count
        }
        guard !handingOver.isEmpty else { return }
        let now = MonotonicTime.nanoseconds()
        var hostSocketsFull = false
        var start = 0
        while start < handingOver.count {
            let end = min(start + UserBackend.handOverChunk, handingOver.count)
            let full = lock.withLock { _ -> Bool in
                guard let s = slirp else { return false }
                var full = false
                for frame in handingOver[start ..< end] {
                    if let reason = frame.withUnsafeBytes({ flowGuard.refusal($0, now: now) }) {
                        counters.dropped(reason)
                        full = full || reason == .wouldBlock
                        continue
                    }
                    frame.withUnsafeBufferPointer { slirp_input(s, $0.baseAddress, Int32($0.count)) }
                    counters.sent(bytes: frame.count)
                }
                refill()
                return full
            }
            hostSocketsFull = hostSocketsFull || full
            deliverOutbox()
            start = end
        }
        if hostSocketsFull {
            guestLog.warning("user.host-sockets", "libslirp holds \(SlirpFlowGuard.hostSocketLimit) host sockets for the guest; frames that would open more are dropped until some close")
        }
        // The buffers move back to the spares (popped, so none is shared with this list).
        outgoing.withLock { q in
            q.inFlight = 0
            while let frame = handingOver.popLast() {
                if q.spare.count < UserBackend.spareBufferLimit, frame.capacity <= UserBackend.spareBufferCapacity { q.spare.append(frame) }
            }
        }
    }

    /// One round of libslirp's poll protocol: hand it what is ready, then ask what to watch next.
    private func cycle(poll: Bool) {
        lock.withLock { _ in
            guard let s = slirp else { return }
            if poll {
                pollSet.collect()
                slirp_pollfds_poll(s, 0, { index, opaque in
                    UserBackend.from(opaque).pollSet.revents(index: index)
                }, Unmanaged.passUnretained(self).toOpaque())
                pollSet.endPoll()
            }
            refill()
        }
        deliverOutbox()
    }

    /// With the lock held: re-arm the watched sockets and the wake-up libslirp's TCP timers need.
    private func refill() {
        guard let s = slirp else { return }
        var timeout = UInt32.max
        pollSet.beginFill()
        slirp_pollfds_fill(s, &timeout, { fd, events, opaque in
            UserBackend.from(opaque).pollSet.add(fd: fd, slirpEvents: events)
        }, Unmanaged.passUnretained(self).toOpaque())
        pollSet.endFill(pauseAccepts: flowGuard.acceptsPaused)
        guard timeout != UInt32.max else { return }
        let deadline = clock.now &+ UInt64(timeout) &* 1_000_000
        if let t = pollTimer {
            if t.deadline <= deadline { return }
            clock.cancel(t.token)
        }
        let token = clock.schedule(at: deadline) { [weak self] in
            guard let self else { return }
            self.loop.execute { [weak self] in
                guard let self else { return }
                self.lock.withLock { _ in self.pollTimer = nil }
                self.cycle(poll: true)
            }
        }
        pollTimer = (token, deadline)
    }

    /// Frames libslirp produced, to the device (without our lock held).
    private func deliverOutbox() {
        let frames = lock.withLock { _ -> [[UInt8]] in
            defer { outbox.removeAll() }
            return outbox
        }
        guard !frames.isEmpty else { return }
        receiveQueue.withLock { q in
            for f in frames {
                if q.count < UserBackend.receiveQueueLimit { q.append(f) } else { counters.dropped(.wouldBlock) }
            }
        }
        drainReceiveQueue()
    }

    private func drainReceiveQueue() {
        while !port.isHolding, let frame = receiveQueue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
            if !frame.withUnsafeBytes({ port.offer($0, header: nil) }) { return }
        }
    }

    private func fireTimer(_ timer: SlirpTimer, generation: UInt64) {
        lock.withLock { _ in
            // A deadline since replaced (timer_mod again) or a freed timer does nothing.
            guard let s = slirp, !timer.freed, timer.generation == generation, timer.token != nil else { return }
            timer.token = nil
            slirp_handle_timer(s, timer.id, timer.callbackOpaque)
            refill()
        }
        deliverOutbox()
    }

    // MARK: libslirp callbacks (run inside libslirp calls, so with `lock` held)

    private static func from(_ opaque: UnsafeMutableRawPointer?) -> UserBackend {
        Unmanaged<UserBackend>.fromOpaque(opaque!).takeUnretainedValue()
    }

    private static func makeCallbacks() -> SlirpCb {
        var cb = SlirpCb()
        cb.send_packet = { buf, len, opaque in
            let b = UserBackend.from(opaque)
            guard let buf, len >= 0 else { return -1 }
            if len > b.capabilities.maxFrameSize {
                b.counters.dropped(.oversized)
            } else {
                b.outbox.append(Array(UnsafeRawBufferPointer(start: buf, count: len)))
            }
            return len
        }
        cb.guest_error = { msg, opaque in
            let text = msg.map { String(cString: $0) } ?? "?"
            UserBackend.from(opaque).guestLog.warning("user.guest-error", "user network: guest error: \(text)")
        }
        cb.clock_get_ns = { opaque in Int64(truncatingIfNeeded: UserBackend.from(opaque).clock.now) }
        cb.timer_new_opaque = { id, cbOpaque, opaque in
            let b = UserBackend.from(opaque)
            let timer = SlirpTimer(id: id, callbackOpaque: cbOpaque)
            b.timers[ObjectIdentifier(timer)] = timer
            return Unmanaged.passUnretained(timer).toOpaque()
        }
        cb.timer_free = { timer, opaque in
            guard let timer else { return }
            let b = UserBackend.from(opaque)
            let t = Unmanaged<SlirpTimer>.fromOpaque(timer).takeUnretainedValue()
            if let token = t.token { b.clock.cancel(token) }
            t.freed = true
            b.timers.removeValue(forKey: ObjectIdentifier(t))
        }
        cb.timer_mod = { timer, expireMilliseconds, opaque in
            guard let timer else { return }
            let b = UserBackend.from(opaque)
            let t = Unmanaged<SlirpTimer>.fromOpaque(timer).takeUnretainedValue()
            if let token = t.token { b.clock.cancel(token) }
            let deadline = UInt64(max(expireMilliseconds, 0)) &* 1_000_000
            t.generation &+= 1
            let generation = t.generation
            t.token = b.clock.schedule(at: deadline) { [weak b, weak t] in
                guard let b, let t else { return }
                b.loop.execute { b.fireTimer(t, generation: generation) }
            }
        }
        // Called inside libslirp, so with the slirp lock held.
        cb.register_poll_fd = { fd, opaque in
            let b = UserBackend.from(opaque)
            b.flowGuard.registered(fd: fd, accepted: b.pollSet.takeAccepting())
        }
        cb.unregister_poll_fd = { fd, opaque in
            let b = UserBackend.from(opaque)
            b.flowGuard.unregistered(fd: fd)
            b.pollSet.release(fd: fd)
        }
        cb.notify = { opaque in
            let b = UserBackend.from(opaque)
            b.loop.execute { [weak b] in b?.cycle(poll: false) }
        }
        cb.init_completed = { _, _ in }
        return cb
    }
}
