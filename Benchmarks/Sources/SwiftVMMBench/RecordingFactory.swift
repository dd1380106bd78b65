import NetBackends
import Synchronization
import VMMCore
import VMMNet

/// The real backend factory (`net=tap:…`, `vde:…`, `user`), keeping each backend it made
/// so that a run can read the backend's own counters: frames/s on TX means frames the
/// backend took (`counters.txFrames`; a backend may refuse with would-block rather than
/// wait, as the VDE backend does when the switch is busy, and counts it as a drop), the
/// same thing the raw C programs count. Nothing sits between the device and the backend.
final class RecordingFactory: NetworkBackendFactory, @unchecked Sendable {
    private let made = Mutex<[NetworkBackend]>([])
    /// The last backend made, and all of them in order (a soak has one per NIC).
    var backend: NetworkBackend? { made.withLock { $0.last } }
    var backends: [NetworkBackend] { made.withLock { $0 } }
    /// The test machine's clock is virtual and only moves when a test advances it, so a
    /// backend's timers (VDE and stream reconnects, libslirp's) would never fire; a soak
    /// that breaks backends needs them on the I/O loop's real clock instead.
    let realTimeBackends: Bool

    init(realTimeBackends: Bool = false) { self.realTimeBackends = realTimeBackends }

    func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        let backendClock = realTimeBackends ? (eventLoop as? DeviceClock ?? clock) : clock
        let b = try NetBackendFactory().makeBackend(options: &options, eventLoop: eventLoop, clock: backendClock)
        made.withLock { $0.append(b) }
        return b
    }
}

extension NetworkBackend {
    /// Frames the backend took so far.
    var acceptedFrames: Int { Int(counters.txFrames.load(ordering: .relaxed)) }
    /// Frames it refused so far (would-block, oversized, link down…). Drops of every
    /// reason: a TX run's backend receives next to nothing (the namespace's rate-limited
    /// ICMP replies), so nearly all are refused sends.
    var refusedFrames: Int { Int(counters.allDrops.values.reduce(0, &+)) }
}
