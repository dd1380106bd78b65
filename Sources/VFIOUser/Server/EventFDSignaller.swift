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
    /// Signals waiting for the thread, and the abandonment epoch they belong to: both
    /// change together, so a batch taken before `abandon` carries the epoch it abandoned.
    private struct Queue {
        var targets: [ClientEventFD] = []
        var epoch: UInt64 = 0
    }
    private let queue = Mutex(Queue())
    private let wakeFD: Int32
    private let stopping = Atomic<Bool>(false)
    /// The epoch now (bumped by `abandon`) and that of the write in progress, if any.
    private let epoch = Atomic<UInt64>(0)
    private let writingEpoch = Atomic<UInt64>(0)
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
            box.release()   // deinit closes wakeFD; there is no thread to stop
            throw .system("pthread_create", errno: started)
        }
        thread = tid
    }

    /// SIGURG interrupts a blocked write (EINTR) instead of restarting it; its default
    /// action is to ignore it, so nothing else in the process notices. Installed with
    /// the first served device, on the main thread before it is confined (rt_sigaction
    /// is on the main role's list only).
    private static let installInterruptHandler: Void = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGURG, &action, nil)
    }()

    /// Queues a signal for `target`; never blocks.
    func signal(_ target: ClientEventFD) {
        guard !stopping.load(ordering: .acquiring),
              !target.queued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.withLock { $0.targets.append(target) }
        _ = clinux_eventfd_signal(wakeFD)
    }

    /// Takes `targets` out of the queue: the client replaced or tore down their vectors.
    /// Without this every replaced eventfd stayed queued, holding its descriptor open,
    /// while the client kept one write blocked: a client could fill the process's
    /// descriptor table. Now at most the installed eventfds and the one being written
    /// are held.
    func withdraw(_ targets: [ClientEventFD]) {
        guard !targets.isEmpty else { return }
        let ids = Set(targets.map(ObjectIdentifier.init))
        queue.withLock { q in q.targets.removeAll { ids.contains(ObjectIdentifier($0)) } }
        for target in targets { target.queued.store(false, ordering: .releasing) }
    }

    /// Drops what is queued and interrupts a write in progress: the client went away.
    /// Returns once no write of an earlier epoch is in progress, and none can start.
    func abandon() {
        let (dropped, now) = queue.withLock { q -> ([ClientEventFD], UInt64) in
            q.epoch &+= 1
            epoch.store(q.epoch, ordering: .sequentiallyConsistent)
            defer { q.targets = [] }
            return (q.targets, q.epoch)
        }
        for target in dropped { target.queued.store(false, ordering: .releasing) }
        interruptWrites(before: now)
    }

    /// Stops and joins the thread. Idempotent; the wake eventfd is closed by `deinit`.
    func stop() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        abandon()
        guard let t = thread else { return }
        _ = clinux_eventfd_signal(wakeFD)
        pthread_join(t, nil)
        thread = nil
    }

    deinit {
        stop()
        close(wakeFD)
    }

    /// Signals the thread while it is in a write of an epoch before `now`. A signal that
    /// lands just before the write starts is lost, hence the repeats (1 ms apart). The
    /// thread checks the epoch after announcing a write and after every EINTR, so once
    /// a signal lands it drops that write and every other target of the old epoch.
    private func interruptWrites(before now: UInt64) {
        guard let t = thread, pthread_equal(t, pthread_self()) == 0 else { return }
        var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        for _ in 0 ..< 10_000 {
            guard writing.load(ordering: .sequentiallyConsistent),
                  writingEpoch.load(ordering: .sequentiallyConsistent) < now else { return }
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
            let (batch, batchEpoch) = queue.withLock { q -> ([ClientEventFD], UInt64) in
                defer { q.targets = [] }
                return (q.targets, q.epoch)
            }
            for target in batch { deliver(target, epoch: batchEpoch) }
        }
    }

    private func deliver(_ target: ClientEventFD, epoch batchEpoch: UInt64) {
        target.queued.store(false, ordering: .releasing)
        writingEpoch.store(batchEpoch, ordering: .sequentiallyConsistent)
        writing.store(true, ordering: .sequentiallyConsistent)
        defer { writing.store(false, ordering: .sequentiallyConsistent) }
        // Announced, then checked: `abandon` either sees this write or this sees its epoch.
        func abandoned() -> Bool {
            epoch.load(ordering: .sequentiallyConsistent) != batchEpoch || stopping.load(ordering: .sequentiallyConsistent)
        }
        guard !abandoned() else { return }
        while clinux_eventfd_signal(target.fd) < 0, errno == EINTR {
            if abandoned() { return }
        }
    }
}
