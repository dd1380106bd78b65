#if canImport(Glibc)
import Glibc
#endif

/// A recursive mutex that serializes everything touching one device: the bus holds it
/// around config-space and BAR accesses from vCPU threads; the device takes it in
/// callbacks from the I/O loop (backend frames, doorbells) and timers. Recursive, so a
/// device that raises an interrupt from inside a register write (which re-enters the
/// MSI-X core under the same lock) cannot deadlock.
public final class DeviceLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inlinable
    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
}
