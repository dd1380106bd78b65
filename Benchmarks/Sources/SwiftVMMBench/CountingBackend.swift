import NetBackends
import Synchronization
import VMMCore
import VMMNet

/// Wraps a real backend and counts what it accepted, so TX frames/s means frames the
/// backend took (a backend may refuse with would-block rather than wait, as the VDE
/// backend does when the switch is busy), the same thing the raw C programs count.
final class CountingBackend: NetworkBackend, @unchecked Sendable {
    let inner: NetworkBackend
    let accepted = Atomic<Int>(0)
    let refused = Atomic<Int>(0)

    init(_ inner: NetworkBackend) { self.inner = inner }

    var description: String { inner.description }
    var capabilities: BackendCapabilities { inner.capabilities }
    var isLinkUp: Bool { inner.isLinkUp }
    var counters: BackendCounters { inner.counters }
    func start(receiver: FrameReceiver) { inner.start(receiver: receiver) }
    func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        let result = inner.send(segments, header: header)
        if result == .sent { accepted.add(1, ordering: .relaxed) } else { refused.add(1, ordering: .relaxed) }
        return result
    }
    func resumeReceive() { inner.resumeReceive() }
    func setReceiveOffloads(_ offloads: NetOffloads) { inner.setReceiveOffloads(offloads) }
    func stop() { inner.stop() }
}

/// The real backend factory (`net=tap:…`, `vde:…`, `user`), each backend wrapped in a counter.
final class CountingFactory: NetworkBackendFactory, @unchecked Sendable {
    private let made = Mutex<[CountingBackend]>([])
    /// The last backend made, and all of them in order (a soak has one per NIC).
    var backend: CountingBackend? { made.withLock { $0.last } }
    var backends: [CountingBackend] { made.withLock { $0 } }
    /// The test machine's clock is virtual and only moves when a test advances it, so a
    /// backend's timers (VDE and stream reconnects, libslirp's) would never fire; a soak
    /// that breaks backends needs them on the I/O loop's real clock instead.
    let realTimeBackends: Bool

    init(realTimeBackends: Bool = false) { self.realTimeBackends = realTimeBackends }

    func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        let backendClock = realTimeBackends ? (eventLoop as? DeviceClock ?? clock) : clock
        let b = CountingBackend(try NetBackendFactory().makeBackend(options: &options, eventLoop: eventLoop, clock: backendClock))
        made.withLock { $0.append(b) }
        return b
    }
}
