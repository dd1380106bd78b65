#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import VMMCore

/// One of the client's interrupt eventfds. Closed when the last holder lets go, so a
/// signal still queued for it never writes a number that was closed and reused since.
final class ClientEventFD: @unchecked Sendable {
    let fd: Int32
    /// Queued for the signaller and not yet written (signals coalesce, as eventfd counts do).
    let queued = Atomic<Bool>(false)
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// Writes the client's eventfds on a thread of its own.
///
/// The client shares each eventfd's open file with this process (SCM_RIGHTS), so it can
/// clear the O_NONBLOCK set here and fill the counter to its maximum; the next write of
/// ours then blocks until someone reads, which a hostile client never does. Done by the
/// device under its lock, or on the shared I/O loop, that write would stall every device
/// of the process and SIGTERM with them. Here only this thread waits. A device's signal
/// is queued (once per eventfd until written) and the thread woken through an eventfd of
/// our own; a write the client blocks is interrupted (`abandon`, SIGURG without
/// SA_RESTART) when the client goes away or the server stops.
final class EventFDSignaller: @unchecked Sendable {
    private let queue = Mutex<[ClientEventFD]>([])
    private let wakeFD: Int32
    private let stopping = Atomic<Bool>(false)
    /// Bumped by `abandon`: a write interrupted after it is dropped, not retried.
    private let abandonments = Atomic<UInt64>(0)
    /// The thread is inside a client write (for `abandon`).
    private let writing = Atomic<Bool>(false)
    private var thread: pthread_t?

    init() throws(VFIOUserError) {
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeFD >= 0 else { throw .system("eventfd", errno: errno) }
        Self.installInterruptHandler
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let started = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let signaller = Unmanaged<EventFDSignaller>.fromOpaque(arg).takeRetainedValue()
            var urg = sigset_t()
            sigemptyset(&urg)
            sigaddset(&urg, SIGURG)
            pthread_sigmask(SIG_UNBLOCK, &urg, nil)
            ThreadConfinement.enter(.vcpu) // reads, writes and futexes: what a vCPU does
            signaller.run()
            return nil
        }, box.toOpaque())
        guard started == 0 else {
            box.release()
            close(wakeFD)
            throw .system("pthread_create", errno: started)
        }
        thread = tid
    }

    /// SIGURG interrupts a blocked write (EINTR) instead of restarting it; its default
    /// action is to ignore it, so nothing else in the process notices.
    private static let installInterruptHandler: Void = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGURG, &action, nil)
    }()

    /// Queues a signal for `target`; never blocks.
    func signal(_ target: ClientEventFD) {
        guard !target.queued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.withLock { $0.append(target) }
        _ = clinux_eventfd_signal(wakeFD)
    }

    /// Drops what is queued and interrupts a write in progress: the client went away.
    func abandon() {
        abandonments.add(1, ordering: .releasing)
        let dropped = queue.withLock { q -> [ClientEventFD] in defer { q = [] }; return q }
        for target in dropped { target.queued.store(false, ordering: .releasing) }
        interruptWrite()
    }

    /// Stops and joins the thread. Idempotent.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        abandon()
        _ = clinux_eventfd_signal(wakeFD)
        if let t = thread { pthread_join(t, nil); thread = nil }
        close(wakeFD)
    }

    deinit { stop() }

    /// Signals the thread until it is out of a client write. A signal that lands just
    /// before the write starts is lost, hence the repeats (1 ms apart, 5 s at most).
    private func interruptWrite() {
        guard let t = thread, pthread_equal(t, pthread_self()) == 0 else { return }
        var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        for _ in 0 ..< 5_000 where writing.load(ordering: .acquiring) {
            pthread_kill(t, SIGURG)
            nanosleep(&pause, nil)
        }
    }

    private func run() {
        var value: UInt64 = 0
        var ready = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
        while !stopping.load(ordering: .acquiring) {
            _ = poll(&ready, 1, -1)
            _ = read(wakeFD, &value, 8)
            let batch = queue.withLock { q -> [ClientEventFD] in defer { q = [] }; return q }
            for target in batch { deliver(target) }
        }
    }

    private func deliver(_ target: ClientEventFD) {
        target.queued.store(false, ordering: .releasing)
        let epoch = abandonments.load(ordering: .acquiring)
        writing.store(true, ordering: .releasing)
        defer { writing.store(false, ordering: .releasing) }
        while clinux_eventfd_signal(target.fd) < 0, errno == EINTR {
            if abandonments.load(ordering: .acquiring) != epoch || stopping.load(ordering: .acquiring) { return }
        }
    }
}
