import Synchronization

/// Device work that continues on the I/O loop as a new guest action, when the action's
/// budget ran out (`ActionCostMeter.shouldDefer`): queued at most once at a time, and its
/// closure made once, so deferring allocates nothing. (A closure per deferral cost one
/// allocation each time, on every 64 KiB software-segmented send: Docs/performance.md.)
///
/// `body` runs on the loop thread and takes the device lock itself. Capture the device
/// weakly: the device owns its deferred actions.
public final class DeferredAction: Sendable {
    private final class Pending: Sendable {
        let queued = Atomic<Bool>(false)
    }

    private let loop: any EventLoop
    private let pending = Pending()
    private let runner: @Sendable () -> Void

    public init(on loop: any EventLoop, _ body: @escaping @Sendable () -> Void) {
        self.loop = loop
        let pending = self.pending
        runner = {
            // Cleared before running: work that defers again queues a new run.
            pending.queued.store(false, ordering: .releasing)
            body()
        }
    }

    /// Queues one run of `body` on the loop unless one is queued already.
    public func schedule() {
        guard !pending.queued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        loop.execute(runner)
    }

    /// Whether a run is queued and has not started yet.
    public var isScheduled: Bool { pending.queued.load(ordering: .acquiring) }
}
