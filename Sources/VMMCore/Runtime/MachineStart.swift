import Synchronization

/// Work that waits until the whole command line was accepted and the machine starts,
/// done on the thread that starts it before any thread enters its sandbox role. What a
/// refused command line must not have done, and what a confined thread may not do,
/// goes here: emptying a `capture=` file (the old capture stays as it was when a later
/// option is refused, and the io-loop and vCPU threads that write frames may not
/// truncate files). Registered in the machine's `ServiceRegistry` by the CLI; once the
/// machine runs (a device hot-plugged over QMP), actions run at once on their caller.
public final class MachineStart: Sendable {
    private let state = Mutex<(started: Bool, pending: [@Sendable () -> Void])>((false, []))

    public init() {}

    /// Runs `action` when the machine starts, or now if it has.
    public func whenStarted(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if !s.started { s.pending.append(action) }
            return s.started
        }
        if now { action() }
    }

    /// The machine starts: runs what waited, in order, on this thread.
    public func start() {
        let pending = state.withLock { s -> [@Sendable () -> Void] in
            s.started = true
            defer { s.pending = [] }
            return s.pending
        }
        for action in pending { action() }
    }
}
