#if canImport(Glibc)
import Glibc
#endif
import CVDEPlug
import Logging
import Synchronization
import VMMCore
import VMMNet

/// `net=vde:URL`: a port on a VDE switch through libvdeplug, which understands
/// `vde:///path` (and a plain switch directory), `vxvde://GROUP` (L2 over UDP multicast),
/// `slirp://` and its other plugins. When the switch goes away the link goes down and the
/// backend retries every second; when it is back the link comes up again.
public final class VDEBackend: NetworkBackend, @unchecked Sendable {
    /// VDE_ETHBUFSIZE: the largest frame libvdeplug carries (9216-byte MTU + Ethernet + 802.1Q).
    public static let maxFrameSize = 9216 + 14 + 4
    static let reconnectInterval: UInt64 = 1_000_000_000
    /// How long the handshake with a switch may take (a switch that accepts and never
    /// answers would otherwise hold the opening thread for good), as NBD's handshake.
    public static let handshakeTimeoutMilliseconds: UInt32 = 5_000
    /// A reconnect runs on the I/O loop, which waits for it: a shorter handshake.
    static let reconnectHandshakeTimeoutMilliseconds: UInt32 = 1_000

    public let url: String
    public let capabilities = BackendCapabilities(virtioNetHeader: false, offloads: [], maxFrameSize: VDEBackend.maxFrameSize)
    public let counters = BackendCounters()
    public var description: String { "vde:\(url)" }
    public var isLinkUp: Bool { port.isLinkUp }

    private let loop: EventLoop
    private let clock: DeviceClock
    private let port: ReceiverPort

    private struct Connection: @unchecked Sendable {
        let handle: OpaquePointer
        let dataFD: Int32
        let controlFD: Int32
        var dataRegistration: IORegistration?
        var controlRegistration: IORegistration?
    }
    private struct State: @unchecked Sendable {
        var connection: Connection?
        var reconnectTimer: TimerToken?
        var started = false
        var stopped = false
        /// A `switchGone` is queued for the loop: sends that fail meanwhile queue no more.
        var teardownQueued = false
    }
    private let state = Mutex(State())
    private let log = RateLimitedLogger(Logger(label: "swiftvmm.net.vde"))
    /// Send gathers the scatter list here (vde_send takes one buffer); guarded by `state`.
    private nonisolated(unsafe) let sendBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: VDEBackend.maxFrameSize, alignment: 16)
    /// Loop thread only.
    private nonisolated(unsafe) let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: VDEBackend.maxFrameSize + 64, alignment: 16)

    /// libvdeplug plugins checked to open, carry frames and close under every thread's
    /// sandbox: a switch (a plain path or `vde://`), `vxvde://`, `vxlan://`, `ptp://`,
    /// `tap://`, `seqpacket://`, `null://`. The others were not, or fail: `hub://`,
    /// `switch://` and `multi://` remove their `vdenode_root` directory when they close
    /// (`rmdir`, which ended the process with SIGSYS and left the directory, so the next
    /// start failed with EEXIST), and `cmd://` forks its command (`pipe2`, `kill`).
    static let sandboxSafePlugins: Set<String> = ["vde", "vxvde", "vxlan", "ptp", "tap", "seqpacket", "null"]

    /// The plugin of `url` if it is not known to work under the sandbox; nil for a switch
    /// and the safe ones.
    public static func sandboxUnsafePlugin(_ url: String) -> String? {
        let plugin = plugin(of: url)
        return sandboxSafePlugins.contains(plugin) ? nil : plugin
    }

    /// The plugin libvdeplug will load for `url`, resolved as its `vde_open_real` does: an
    /// empty URL is the link `$HOME/.vde2/default.switch`; a regular file stands for the
    /// URL on its first line; the plugin is whatever precedes the first "://", and
    /// without one it is `vde` (a switch path). The name is compared as given, as
    /// libvdeplug builds `libvdeplug_NAME.so` from it.
    static func plugin(of url: String) -> String {
        var target = url
        if target.isEmpty, let home = getenv("HOME") {
            target = readLink(String(cString: home) + "/.vde2/default.switch") ?? ""
        }
        var info = stat()
        if lstat(target, &info) == 0, info.st_mode & S_IFMT == S_IFREG, let line = firstLine(of: target) {
            target = line
        }
        guard let separator = target.firstRange(of: "://") else { return "vde" }
        return String(target[..<separator.lowerBound])
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, Int(PATH_MAX))
        guard n >= 0 else { return nil }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The first line of the file at `path`, at most PATH_MAX bytes, as libvdeplug reads it.
    private static func firstLine(of path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX))
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let bytes = buffer.prefix(n).prefix { $0 != UInt8(ascii: "\n") }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func sandboxUnsafeWhy(_ plugin: String) -> String {
        switch plugin {
        case "hub", "switch", "multi": "it removes its directory when it closes"
        case "cmd": "it starts a command"
        default: "not checked to run confined"
        }
    }

    public init(url: String, eventLoop: EventLoop, clock: DeviceClock,
                handshakeTimeoutMilliseconds: UInt32 = VDEBackend.handshakeTimeoutMilliseconds) throws(NetBackendError) {
        self.url = url
        loop = eventLoop
        self.clock = clock
        guard let connection = VDEBackend.open(url, handshakeTimeoutMilliseconds: handshakeTimeoutMilliseconds) else {
            let e = errno
            sendBuffer.deallocate()
            readBuffer.deallocate()
            throw .system(option: "net", value: "vde:\(url)", call: "vde_open", errno: e == 0 ? ENOENT : e,
                          hint: e == ETIMEDOUT
                              ? "the switch accepted the connection but did not answer within \(Double(handshakeTimeoutMilliseconds) / 1000) s"
                              : "is a vde_switch running there? e.g. vde_switch -d -s \(url.hasPrefix("/") ? url : "/tmp/sw")")
        }
        state.withLock { $0.connection = connection }
        port = ReceiverPort(counters: counters, linkUp: true)
    }

    deinit {
        stop()
        sendBuffer.deallocate()
        readBuffer.deallocate()
    }

    private static func open(_ url: String, handshakeTimeoutMilliseconds: UInt32 = VDEBackend.handshakeTimeoutMilliseconds) -> Connection? {
        var timedOut: Int32 = 0
        guard let handle = cvde_open_within(url, "swiftvmm", handshakeTimeoutMilliseconds, &timedOut) else { return nil }
        let data = vde_datafd(handle)
        let control = vde_ctlfd(handle)
        setNonBlocking(data)
        return Connection(handle: handle, dataFD: data, controlFD: control)
    }

    public func start(receiver: FrameReceiver) {
        port.attach(receiver)
        state.withLock { s in
            s.started = true
            if var c = s.connection {
                register(&c)
                s.connection = c
            }
        }
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard let length = ScatterList.totalLength(segments), length <= VDEBackend.maxFrameSize else { return drop(.oversized) }
        guard length >= minimumFrameSize else { return drop(.malformed) }
        nonisolated(unsafe) let segments = segments
        let result = state.withLock { s -> SendResult in
            guard let c = s.connection else { return .dropped(.linkDown) }
            let n = ScatterList.gather(segments, into: sendBuffer)
            let sent = vde_send(c.handle, sendBuffer.baseAddress, n, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            if sent >= 0 { return .sent }
            let e = errno
            if ConnectionErrno.isTransient(e) { return .dropped(.wouldBlock) }
            if ConnectionErrno.isGone(e) {
                if !s.teardownQueued {
                    s.teardownQueued = true
                    loop.execute { [weak self] in self?.switchGone() }
                }
                return .dropped(.linkDown)
            }
            return .dropped(.backendError)
        }
        counters.record(result, bytes: length)
        return result
    }

    public func resumeReceive() {
        loop.execute { [weak self] in
            guard let self, self.port.retry() else { return }
            self.state.withLock { s in
                if let r = s.connection?.dataRegistration { self.loop.update(r, events: .readable) }
            }
        }
    }

    public func setReceiveOffloads(_: NetOffloads) {}

    public func stop() {
        state.withLock { s in
            guard !s.stopped else { return }
            s.stopped = true
            if let t = s.reconnectTimer { clock.cancel(t) }
            s.reconnectTimer = nil
            closeConnection(&s)
        }
        port.detach()
    }

    // MARK: Loop thread

    private func drop(_ reason: DropReason) -> SendResult {
        counters.dropped(reason)
        return .dropped(reason)
    }

    private func register(_ c: inout Connection) {
        c.dataRegistration = try? loop.register(fd: c.dataFD, events: .readable) { [weak self] events in self?.readData(events) }
        // The control socket says nothing after the handshake; readable means EOF: the switch is gone.
        if c.controlFD >= 0, c.controlFD != c.dataFD {
            c.controlRegistration = try? loop.register(fd: c.controlFD, events: .readable) { [weak self] _ in self?.controlEvent() }
        }
    }

    private func closeConnection(_ s: inout State) {
        guard let c = s.connection else { return }
        if let r = c.dataRegistration { loop.unregister(r) }
        if let r = c.controlRegistration { loop.unregister(r) }
        vde_close(c.handle)
        s.connection = nil
        s.teardownQueued = false
    }

    private func readData(_ events: IOEvents) {
        guard let (handle, fd) = state.withLock({ s in s.connection.map { ($0.handle, $0.dataFD) } }) else { return }
        for _ in 0 ..< 64 {
            // Paused for a held frame, a stream or seqpacket peer's hangup still fires on
            // every turn of the loop: it is the end, not a reason to pause again.
            if port.isHolding { return events.isDisjoint(with: .hangup) ? pauseReading() : switchGone() }
            // Read only while the connection read from is still the one in place: a
            // delivery below may wait for the device lock while `stop` on another thread
            // closes it (vde_close frees the handle).
            let n = state.withLock { s -> Int in
                guard let c = s.connection, c.handle == handle else { return -2 }
                return vde_recv(handle, readBuffer.baseAddress, readBuffer.count, Int32(MSG_DONTWAIT))
            }
            if n == -2 { return }
            if n < 0 {
                if ConnectionErrno.isTransient(errno) { return }
                return switchGone()
            }
            if n == 0 {
                // A datagram socket reads 0 only for an empty datagram; a stream or
                // seqpacket one (`vde:seqpacket://`, a plain file) means the peer is gone.
                // Not S_IFSOCK: every socket is one, and a dead seqpacket peer then spun the
                // loop for ever, counting 64 empty frames a turn.
                var type: Int32 = 0
                var size = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0, type == Int32(SOCK_DGRAM.rawValue) {
                    counters.dropped(.malformed)
                    continue
                }
                return switchGone()
            }
            if n > VDEBackend.maxFrameSize { counters.dropped(.oversized); continue }
            if n < minimumFrameSize { counters.dropped(.malformed); continue }
            if !port.offer(UnsafeRawBufferPointer(rebasing: readBuffer[0 ..< n]), header: nil) { return pauseReading() }
        }
    }

    /// The control socket readable: EOF (the switch is gone), or bytes a switch should not
    /// send after the handshake, which are read and dropped (a bounded amount per event).
    /// Only peeking at them left the socket readable for ever: the loop spun at full CPU.
    private func controlEvent() {
        var discard = [UInt8](repeating: 0, count: 512)
        // Under the lock that closes the connection (as the data reads are).
        guard let (n, error) = state.withLock({ s -> (Int, Int32)? in
            guard let fd = s.connection?.controlFD else { return nil }
            let n = discard.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return (n, errno)
        }) else { return }
        if n == 0 || (n < 0 && !ConnectionErrno.isTransient(error)) { switchGone() }
    }

    private func pauseReading() {
        state.withLock { s in
            if let r = s.connection?.dataRegistration { loop.update(r, events: []) }
        }
    }

    private func switchGone() {
        let wasConnected = state.withLock { s -> Bool in
            guard s.connection != nil else { return false }
            closeConnection(&s)
            scheduleReconnect(&s)
            return true
        }
        if wasConnected { port.setLink(up: false) }
    }

    private func scheduleReconnect(_ s: inout State) {
        guard !s.stopped, s.reconnectTimer == nil else { return }
        s.reconnectTimer = clock.schedule(at: clock.now &+ VDEBackend.reconnectInterval) { [weak self] in
            guard let self else { return }
            self.loop.execute { [weak self] in self?.tryReconnect() }
        }
    }

    private func tryReconnect() {
        let attempt = state.withLock { s -> Bool in
            s.reconnectTimer = nil
            guard !s.stopped, s.connection == nil else { return false }
            // libvdeplug's vde_open looks the user up, makes and chmods its own socket file
            // and may dlopen a plugin: more than the io-loop's sandbox allows (the first
            // connect ran before it). Under the sandbox the link stays down.
            guard !ThreadConfinement.currentThreadIsConfined else {
                log.warning("vde.reconnect", "\(url): the switch went away; the sandbox does not allow reconnecting (libvdeplug needs calls the I/O thread may not make), so the link stays down (--sandbox off reconnects)")
                return false
            }
            return true
        }
        guard attempt else { return }
        // Outside the lock (the vCPUs' sends take it) and for at most a second: the I/O
        // loop waits for the handshake, and a switch that accepts and never answers would
        // otherwise hold it 5 s of every 6.
        let opened = VDEBackend.open(url, handshakeTimeoutMilliseconds: VDEBackend.reconnectHandshakeTimeoutMilliseconds)
        let connected = state.withLock { s -> Bool in
            guard var c = opened else {
                scheduleReconnect(&s)
                return false
            }
            guard !s.stopped, s.connection == nil else {   // stopped meanwhile
                vde_close(c.handle)
                return false
            }
            if s.started { register(&c) }
            s.connection = c
            return true
        }
        if connected { port.setLink(up: true) }
    }
}
