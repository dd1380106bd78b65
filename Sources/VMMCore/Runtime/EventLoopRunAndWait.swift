/// Thrown when work handed to the I/O loop did not start in time (the loop is stopping
/// or stuck); the work will not run.
public struct EventLoopTimeout: Error, CustomStringConvertible {
    public var description: String { "the I/O loop did not take the request in time (is the VM stopping?)" }
}

public extension EventLoop {
    /// Runs `work` on the loop thread and waits for it (for control-socket commands that
    /// must act between two device events, e.g. a backend swap). When the loop has not
    /// started `work` within `timeout` seconds — it is stopped or stopping — the work is
    /// cancelled (it never runs, even if the loop gets to it later) and this throws. Once
    /// started, `work` is waited for; it must itself be bounded.
    func runAndWait(timeout: Double, _ work: @escaping @Sendable () -> Void) throws(EventLoopTimeout) {
        let handoff = Handoff()
        execute {
            let start = handoff.condition.withLock { () -> Bool in
                guard handoff.stage == .queued else { return false }
                handoff.stage = .running
                return true
            }
            guard start else { return }
            work()
            handoff.condition.withLock { handoff.stage = .done; handoff.condition.broadcast() }
        }
        let ran = handoff.condition.withLock { () -> Bool in
            _ = handoff.condition.wait(until: MonotonicDeadline(secondsFromNow: timeout)) { handoff.stage == .done }
            switch handoff.stage {
            case .queued: handoff.stage = .cancelled; return false
            case .running: _ = handoff.condition.wait { handoff.stage == .done }; return true
            case .done, .cancelled: return true
            }
        }
        if !ran { throw EventLoopTimeout() }
    }
}

/// What `runAndWait` shares between the waiting thread and the loop.
private final class Handoff: @unchecked Sendable {
    enum Stage { case queued, running, done, cancelled }
    let condition = ThreadCondition()
    var stage = Stage.queued   // guarded by `condition`
}
