import VMMCore

/// A FIFO of jobs for a fixed set of worker threads, bounded: `limit` counts the jobs
/// waiting *and* those a worker is running, which is what `BlockGeometry.queueLimit`
/// promises the device. Closing it hands back the jobs no worker took.
final class BoundedWorkQueue<Job>: @unchecked Sendable {
    enum PushResult { case accepted, full, closed }

    let limit: Int
    private let condition = ThreadCondition()
    // A ring of `limit` slots (guarded by `condition`).
    private var slots: [Job?]
    private var head = 0
    private var queued = 0
    private var running = 0
    private var closed = false

    init(limit: Int) {
        self.limit = max(1, limit)
        slots = Array(repeating: nil, count: self.limit)
    }

    func push(_ job: Job) -> PushResult {
        condition.withLock {
            if closed { return .closed }
            guard queued + running < limit else { return .full }
            slots[(head + queued) % limit] = job
            queued += 1
            condition.broadcast()
            return .accepted
        }
    }

    /// Waits for a job; nil once the queue is closed. The caller runs it, then calls `finished()`.
    func pop() -> Job? {
        condition.withLock {
            _ = condition.wait { closed || queued > 0 }
            guard !closed, queued > 0 else { return nil }
            let job = slots[head]
            slots[head] = nil
            head = (head + 1) % limit
            queued -= 1
            running += 1
            return job
        }
    }

    /// A job `pop` returned is done: its slot is free again.
    func finished() {
        condition.withLock { running = max(0, running - 1) }
    }

    /// Refuses new jobs, wakes the workers (their `pop` returns nil) and returns the jobs
    /// still waiting, in order. Later calls return nothing.
    func close() -> [Job] {
        condition.withLock {
            closed = true
            var left: [Job] = []
            while queued > 0 {
                if let job = slots[head] { left.append(job) }
                slots[head] = nil
                head = (head + 1) % limit
                queued -= 1
            }
            condition.broadcast()
            return left
        }
    }
}
