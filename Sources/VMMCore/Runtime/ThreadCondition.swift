#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable, for threads that wait for one another (a vCPU at
/// the pause gate, a control command waiting for the I/O loop). The pthread objects live
/// in allocated memory: they must not move, which a Swift stored property does not promise.
public final class ThreadCondition: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        // Deadlines on CLOCK_MONOTONIC: a wall-clock step must not stretch or cut a wait.
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Wakes every waiter; call with the lock held, after changing what they wait for.
    public func broadcast() { pthread_cond_broadcast(cond) }

    /// Waits (lock held) until `done()` or the deadline; returns `done()`'s last answer.
    public func wait(until deadline: MonotonicDeadline? = nil, _ done: () -> Bool) -> Bool {
        while !done() {
            guard let deadline else { pthread_cond_wait(cond, mutex); continue }
            var ts = deadline.timespec
            if pthread_cond_timedwait(cond, mutex, &ts) == ETIMEDOUT { return done() }
        }
        return true
    }
}

/// A point in time on CLOCK_MONOTONIC.
public struct MonotonicDeadline: Sendable {
    public let nanoseconds: UInt64

    public init(secondsFromNow seconds: Double) {
        nanoseconds = MonotonicTime.nanoseconds() &+ UInt64(min(max(0, seconds), 1e6) * 1e9)
    }

    public var hasPassed: Bool { MonotonicTime.nanoseconds() >= nanoseconds }

    var timespec: Glibc.timespec {
        Glibc.timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}
