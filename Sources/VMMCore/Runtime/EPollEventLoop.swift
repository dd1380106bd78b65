#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CLinux

/// `EventLoop` on epoll, with an eventfd to wake it for `execute` and a deadline list
/// for timers; it is also the `DeviceClock` for real (non-virtual) time.
public final class EPollEventLoop: EventLoop, DeviceClock, @unchecked Sendable {
    private let epfd: Int32
    private let wakeFD: Int32
    private let startTime = MonotonicTime.nanoseconds()
    private struct Timer { let deadline: UInt64; let id: UInt64; let action: @Sendable () -> Void }
    /// A closure in a struct: an array of bare closures stores them at generic
    /// abstraction, and the thunk that converts each one allocates (a 32-byte context per
    /// `execute`, seen with package-benchmark's allocation stacks).
    private struct QueuedWork { let body: @Sendable () -> Void }
    private struct State {
        var handlers: [UInt64: @Sendable (IOEvents) -> Void] = [:]
        var fds: [UInt64: Int32] = [:]
        var nextID: UInt64 = 1
        var work: [QueuedWork] = []
        /// The array the last turn ran, emptied with its capacity kept: the next turn's
        /// queue, so queuing work does not allocate once the loop has warmed up.
        var spareWork: [QueuedWork] = []
        var timers: [Timer] = []
        var stopped = false
    }
    private let state = Mutex(State())
    private let running = Atomic<Bool>(false)
    private var thread: pthread_t?

    public init() throws(EventLoopError) {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw .system(call: "epoll_create1", errno: errno) }
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeFD >= 0 else {
            close(epfd)
            throw .system(call: "eventfd", errno: errno)
        }
        var ev = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: 0))
        epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev)
    }

    deinit {
        close(wakeFD)
        close(epfd)
    }

    // MARK: EventLoop

    public func register(fd: Int32, events: IOEvents, _ handler: @escaping @Sendable (IOEvents) -> Void) throws(EventLoopError) -> IORegistration {
        let id = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.handlers[id] = handler
            s.fds[id] = fd
            return id
        }
        var ev = epoll_event(events: events.rawValue | UInt32(EPOLLRDHUP.rawValue), data: epoll_data_t(u64: id))
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            let e = errno
            state.withLock { s in _ = s.handlers.removeValue(forKey: id); _ = s.fds.removeValue(forKey: id) }
            throw .system(call: "epoll_ctl(ADD)", errno: e)
        }
        return IORegistration(id: id)
    }

    public func update(_ registration: IORegistration, events: IOEvents) {
        guard let fd = state.withLock({ $0.fds[registration.id] }) else { return }
        var ev = epoll_event(events: events.rawValue | UInt32(EPOLLRDHUP.rawValue), data: epoll_data_t(u64: registration.id))
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev)
    }

    public func unregister(_ registration: IORegistration) {
        guard let fd = state.withLock({ s -> Int32? in
            s.handlers.removeValue(forKey: registration.id)
            return s.fds.removeValue(forKey: registration.id)
        }) else { return }
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
    }

    public func execute(_ work: @escaping @Sendable () -> Void) {
        // A stopped loop never runs work again: queued now, it would only pile up (a
        // QMP client flooding set_link while the VM shuts down).
        let queued = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.work.append(QueuedWork(body: work))
            return true
        }
        if queued { wake() }
    }

    // MARK: DeviceClock

    public var now: UInt64 { MonotonicTime.nanoseconds() &- startTime }

    @discardableResult
    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) -> TimerToken {
        let id = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.timers.append(Timer(deadline: deadline, id: id, action: action))
            return id
        }
        wake()
        return TimerToken(id: id)
    }

    public func cancel(_ token: TimerToken) {
        state.withLock { $0.timers.removeAll { $0.id == token.id } }
    }

    // MARK: Running

    private func wake() {
        _ = clinux_eventfd_signal(wakeFD)
    }

    /// Runs the work `execute` queued so far (not what that work queues in turn) on the
    /// calling thread; returns how many items ran. The loop does this each turn; tests
    /// without a loop thread call it to play one turn.
    @discardableResult
    public func runQueuedWork() -> Int {
        var work = state.withLock { s -> [QueuedWork] in
            let w = s.work
            s.work = s.spareWork
            s.spareWork = []
            return w
        }
        for w in work { w.body() }
        let count = work.count
        work.removeAll(keepingCapacity: true)
        state.withLock { s in
            // Kept for reuse up to a size a burst of devices plausibly needs; a rare
            // larger burst's storage is freed.
            if s.spareWork.capacity < work.capacity, work.capacity <= 4096 { s.spareWork = work }
        }
        return count
    }

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        running.store(true, ordering: .releasing)
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let timeout: Int32 = state.withLock { s in
                if s.stopped { return -2 }
                guard let next = s.timers.map(\.deadline).min() else { return -1 }
                let n = now
                return next <= n ? 0 : Int32(min((next - n + 999_999) / 1_000_000, 1000))
            }
            if timeout == -2 { break }
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), timeout) }
            if n < 0 && errno != EINTR { break }
            for i in 0 ..< max(0, Int(n)) {
                let ev = events[i]
                if ev.data.u64 == 0 {
                    var v: UInt64 = 0
                    _ = read(wakeFD, &v, 8)
                    continue
                }
                if let h = state.withLock({ $0.handlers[ev.data.u64] }) { h(IOEvents(rawValue: ev.events)) }
            }
            runQueuedWork()
            let t = now
            let due = state.withLock { s -> [Timer] in
                let due = s.timers.filter { $0.deadline <= t }.sorted { ($0.deadline, $0.id) < ($1.deadline, $1.id) }
                s.timers.removeAll { $0.deadline <= t }
                return due
            }
            for d in due { d.action() }
        }
        running.store(false, ordering: .releasing)
    }

    /// Starts `run()` on a new thread.
    public func startThread(name: String = "io-loop") {
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let loop = Unmanaged<EPollEventLoop>.fromOpaque(arg).takeRetainedValue()
            ThreadConfinement.enter(.io)
            loop.run()
            return nil
        }, box.toOpaque())
        thread = tid
        _ = name
    }

    /// Stops the loop; joins its thread if `startThread` made one.
    public func stop() {
        state.withLock { $0.stopped = true }
        wake()
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }
}
