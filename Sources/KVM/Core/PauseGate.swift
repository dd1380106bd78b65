import Synchronization
import VMMCore

/// Pauses and resumes vCPUs (QMP `stop`/`cont`): each vCPU thread passes the gate before
/// every KVM_RUN; `pause()` closes it, kicks the vCPUs out of KVM_RUN and returns once
/// all of them wait at it, so no guest instruction runs until `resume()`.
final class PauseGate: @unchecked Sendable {
    private let closed = Atomic<Bool>(false)
    private let condition = ThreadCondition()
    private var parked = 0        // guarded by `condition`
    private var released = false  // guarded by `condition`

    var isPaused: Bool { closed.load(ordering: .acquiring) }

    /// Called by a vCPU thread before KVM_RUN: returns at once unless paused.
    func pass() {
        guard closed.load(ordering: .acquiring) else { return }
        condition.withLock {
            parked += 1
            condition.broadcast()
            _ = condition.wait { !closed.load(ordering: .acquiring) || released }
            parked -= 1
        }
    }

    /// Closes the gate, kicks the vCPUs, and waits until `count` of them are parked. The
    /// kick is repeated every 10 ms: a vCPU thread that was still starting (no thread to
    /// signal yet) or between the gate and KVM_RUN when the first kick went out is caught
    /// by a later one.
    func pause(vcpus count: Int, kick: () -> Void) {
        closed.store(true, ordering: .releasing)
        while true {
            kick()
            let done = condition.withLock {
                condition.wait(until: MonotonicDeadline(secondsFromNow: 0.01)) { parked >= count || released }
            }
            if done { return }
        }
    }

    func resume() {
        condition.withLock {
            closed.store(false, ordering: .releasing)
            condition.broadcast()
        }
    }

    /// The machine is stopping: nobody waits at the gate any more.
    func release() {
        condition.withLock {
            released = true
            condition.broadcast()
        }
    }
}
