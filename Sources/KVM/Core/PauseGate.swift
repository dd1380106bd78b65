#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Pauses and resumes vCPUs (QMP `stop`/`cont`): each vCPU thread passes the gate before
/// every KVM_RUN; `pause()` closes it, kicks the vCPUs out of KVM_RUN and returns once
/// all of them wait at it, so no guest instruction runs until `resume()`.
final class PauseGate: @unchecked Sendable {
    private let closed = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var parked = 0
    private var released = false

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    var isPaused: Bool { closed.load(ordering: .acquiring) }

    /// Called by a vCPU thread before KVM_RUN: returns at once unless paused.
    func pass() {
        guard closed.load(ordering: .acquiring) else { return }
        pthread_mutex_lock(&mutex)
        parked += 1
        pthread_cond_broadcast(&cond)
        while closed.load(ordering: .acquiring) && !released { pthread_cond_wait(&cond, &mutex) }
        parked -= 1
        pthread_mutex_unlock(&mutex)
    }

    /// Closes the gate, kicks the vCPUs, and waits until `count` of them are parked.
    func pause(vcpus count: Int, kick: () -> Void) {
        closed.store(true, ordering: .releasing)
        kick()
        pthread_mutex_lock(&mutex)
        while parked < count && !released { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }

    func resume() {
        pthread_mutex_lock(&mutex)
        closed.store(false, ordering: .releasing)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// The machine is stopping: nobody waits at the gate any more.
    func release() {
        pthread_mutex_lock(&mutex)
        released = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }
}
