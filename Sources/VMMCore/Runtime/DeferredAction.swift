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

extension DeferredAction {
    /// A device's continuation as a new guest action: `work` runs under the device's lock
    /// and is measured by its cost meter, like the register access or kick it continues.
    public convenience init(continuing environment: some DeviceEnvironment, _ work: @escaping @Sendable () -> Void) {
        let lock = environment.lock, cost = environment.cost
        self.init(on: environment.eventLoop) { lock.withLock { cost.measure { work() } } }
    }
}

/// One continuation per queue (or queue pair) of a device, each queued at most once.
public final class DeferredActions: Sendable {
    private let actions: [DeferredAction]

    /// `work` gets the index whose continuation runs.
    public init(count: Int, continuing environment: some DeviceEnvironment, _ work: @escaping @Sendable (Int) -> Void) {
        actions = (0 ..< max(0, count)).map { index in DeferredAction(continuing: environment) { work(index) } }
    }

    /// Queues the continuation of `index`; an index out of range is ignored.
    public func schedule(_ index: Int) {
        guard actions.indices.contains(index) else { return }
        actions[index].schedule()
    }
}
