#if canImport(Glibc)
import Glibc
#endif
import CNBD
import VMMBlock
import VMMCore

/// An NBD export through libnbd's asynchronous API, driven by the VM's I/O loop: the
/// socket sits on the epoll loop, readiness calls `nbd_aio_notify_read/write`, requests
/// become `nbd_aio_pread/pwrite/flush/trim/zero` with completion callbacks.
///
/// One lock (`lock`) guards all state and every call into libnbd, so callbacks (which
/// run inside those calls) need no lock of their own; completions are collected under
/// it and posted to the loop after it is released, never run inside libnbd.
///
/// When the server goes away, commands in flight go back to the front of the queue and
/// a reconnect thread knocks with `NBDReconnectPolicy`'s backoff; after its timeout the
/// queue fails with ENOTCONN and new requests fail at once until a reconnect succeeds.
/// With a `requestTimeout` (off by default), a request the connected server has answered
/// none of its commands for that long has the connection treated as gone (the same thread
/// watches it), as Linux's nbd driver does with a timeout set (`nbd_xmit_timeout` marks the
/// socket dead and requeues; with none, its default, it only logs a possibly stuck
/// request): its commands are re-sent on the next connection, and a request sent
/// `maxSends` times fails with EIO, so nothing waits on a server for ever.
public final class NBDBackend: BlockBackend, @unchecked Sendable {
    /// Commands in flight on the socket at once: a request with more is issued a window at
    /// a time (`NBDPieceCursor`), and requests behind it wait in the queue.
    static let maxPiecesInFlight = 64

    public let description: String
    public let counters = BlockCounters()
    public var geometry: BlockGeometry { lock.withLock { state.geometry } }

    private typealias Completion = @Sendable (BlockResult) -> Void
    private typealias Done = [(Completion, BlockResult)]

    private struct Outstanding {
        let id: UInt64
        let request: BlockRequest
        let completion: Completion
        /// Bumped when the request is re-sent after a reconnect: callbacks of older tries are ignored.
        var attempt: UInt32 = 0
        /// The commands still to issue.
        var cursor: NBDPieceCursor
        /// Commands issued and not yet completed.
        var piecesLeft = 0
        /// Monotonic ns of the last reply to one of its commands, or of its first command
        /// sent while none were out: with `piecesLeft > 0`, the server has answered none of
        /// it since. Per request, as Linux times each request: a server that answers the
        /// others but never one command still has that request time out.
        var lastProgress: UInt64 = 0
        var error: Int32 = 0
        var lost = false
    }

    private struct Watch {
        let registration: IORegistration
        /// Our dup of libnbd's socket: the epoll entry lives until we close it, whatever libnbd does with its own fd.
        let fd: Int32
        let connection: UInt64
        var events: IOEvents
    }

    /// Everything below is guarded by `lock`.
    private struct State {
        var geometry: BlockGeometry
        var export: NBDExport
        var connection: NBDConnection?
        var watch: Watch?
        var connectionSerial: UInt64 = 0
        var pending: [Outstanding] = []
        var inFlight: [UInt64: Outstanding] = [:]
        var piecesInFlight = 0
        /// The most commands ever in flight at once (tests check the window holds).
        var peakPiecesInFlight = 0
        /// The request in `inFlight` whose commands are not all issued yet (at most one:
        /// requests are issued in order).
        var issuing: UInt64?
        var nextRequestID: UInt64 = 1
        /// Monotonic ns when the connection was lost; nil while connected.
        var downSince: UInt64?
        var nextAttempt: UInt64 = 0
        /// Down for longer than the policy's timeout: requests fail at once.
        var failFast = false
        var policy: NBDReconnectPolicy
        var stopped = false
        var kickScheduled = false
        var resizeHandler: (@Sendable (UInt64) -> Void)?
        var outstanding: Int { pending.count + inFlight.count }
    }

    private let uri: String
    /// Seconds the server may leave a request's commands unanswered (0: no limit).
    private let requestTimeout: Double
    private let loop: EventLoop
    private let lock = ThreadCondition()
    private let sink = NBDCompletionSink()
    private var state: State
    private var reconnector: WorkerThread?

    public init(uri: String, readOnly: Bool, blockSize: UInt32?, queueLimit: Int = DiskBackendConfig.defaultQueueLimit,
                reconnectTimeout: Double = DiskBackendConfig.defaultReconnectTimeout,
                requestTimeout: Double = DiskBackendConfig.defaultRequestTimeout, eventLoop: EventLoop) throws(DiskBackendError) {
        self.uri = uri
        self.requestTimeout = requestTimeout.isFinite ? max(0, requestTimeout) : DiskBackendConfig.defaultRequestTimeout
        loop = eventLoop
        let connection: NBDConnection
        switch NBDConnection.connect(uri: uri, timeout: NBDReconnectPolicy.handshakeTimeout, shouldGiveUp: { false }) {
        case let .success(c): connection = c
        case let .failure(e): throw .nbd(uri: uri, message: "cannot connect to the NBD server: \(e)")
        }
        let export = connection.export
        let serverMinimum = export.minimumBlockSize
        guard serverMinimum <= 4096 else {
            throw .nbd(uri: uri, message: "the server needs \(serverMinimum)-byte blocks; at most 4096 is supported")
        }
        let logical = blockSize ?? (serverMinimum > 512 ? 4096 : 512)
        guard logical >= serverMinimum else {
            throw .nbd(uri: uri, message: "block-size=\(logical) is smaller than the server's minimum block size \(serverMinimum)")
        }
        let ro = readOnly || export.readOnly
        state = State(
            geometry: BlockGeometry(size: export.size / UInt64(logical) * UInt64(logical), logicalBlockSize: logical,
                                    physicalBlockSize: logical, readOnly: ro, canFlush: export.canFlush,
                                    canDiscard: !ro && export.canTrim, canWriteZeroes: !ro && export.canZero,
                                    queueLimit: max(1, queueLimit)),
            export: export, policy: NBDReconnectPolicy(timeout: reconnectTimeout))
        description = "nbd \(uri)" + (ro ? " (read-only)" : "")

        var done: Done = []
        let adopted = lock.withLock { adopt(connection, &done) }
        guard adopted else {
            throw .nbd(uri: uri, message: "cannot watch the NBD socket on the I/O loop")
        }
        guard let thread = WorkerThread(name: "blk-nbd-reconn", role: .diskConnect, { [self] in self.reconnectLoop() }) else {
            let e = errno
            stop()
            throw .system(option: "disk", value: uri, call: "pthread_create", errno: e, hint: nil)
        }
        lock.withLock { reconnector = thread }
    }

    // MARK: BlockBackend

    public func submit(_ request: BlockRequest, completion: @escaping @Sendable (BlockResult) -> Void) -> Bool {
        var done: Done = []
        let accepted = lock.withLock { () -> Bool in
            let o = Outstanding(id: state.nextRequestID, request: request, completion: completion,
                                    cursor: NBDPieceCursor(request))
            state.nextRequestID &+= 1
            if state.stopped {
                finish(o, .ioError(errno: ECANCELED), &done)
                return true
            }
            guard state.outstanding < state.geometry.queueLimit else {
                counters.queueFull.add(1, ordering: .relaxed)
                return false
            }
            if state.failFast {
                finish(o, .ioError(errno: ENOTCONN), &done)
                return true
            }
            state.pending.append(o)
            // Commands are issued on the loop, so libnbd callbacks never run on a vCPU's stack.
            if state.connection != nil, !state.kickScheduled {
                state.kickScheduled = true
                loop.execute { [weak self] in self?.kick() }
            }
            return true
        }
        post(done)
        return accepted
    }

    /// The most commands that were ever in flight at once (at most `maxPiecesInFlight`).
    var peakPiecesInFlight: Int { lock.withLock { state.peakPiecesInFlight } }

    public func resize(to bytes: UInt64) throws(BlockBackendError) {
        throw .resizeUnsupported("an NBD export's size is set by its server")
    }

    public func onResize(_ handler: @escaping @Sendable (UInt64) -> Void) {
        lock.withLock { state.resizeHandler = handler }
    }

    /// Closes the connection, fails every request not completed with ECANCELED and joins
    /// the reconnect thread. Idempotent.
    public func stop() {
        var done: Done = []
        let thread = lock.withLock { () -> WorkerThread? in
            guard !state.stopped else { return nil }
            state.stopped = true
            closeConnection()
            sink.entries.removeAll()
            let left = state.inFlight.values.sorted { $0.id < $1.id } + state.pending
            state.inFlight.removeAll()
            state.pending.removeAll()
            state.issuing = nil
            state.piecesInFlight = 0
            for o in left { finish(o, .ioError(errno: ECANCELED), &done) }
            lock.broadcast()
            defer { reconnector = nil }
            return reconnector
        }
        thread?.join()
        post(done)
    }

    // MARK: The loop side

    /// The socket is ready: let libnbd read replies / send queued commands.
    private func socketReady(_ events: IOEvents, connection serial: UInt64) {
        var done: Done = []
        lock.withLock {
            guard let connection = state.connection, state.watch?.connection == serial else { return }
            if events.contains(.writable) { _ = nbd_aio_notify_write(connection.handle) }
            if !events.intersection([.readable, .hangup]).isEmpty, !connection.isDead { _ = nbd_aio_notify_read(connection.handle) }
            // A hang-up libnbd did not notice itself would be reported again and again: treat it as the end.
            let dead = connection.isDead || !events.intersection(.hangup).isEmpty
            drainCompletions(connectionLost: dead, &done)
            if dead {
                disconnect(&done)
            } else {
                issuePending(&done)
            }
        }
        post(done)
    }

    /// New requests were queued.
    private func kick() {
        var done: Done = []
        lock.withLock {
            state.kickScheduled = false
            issuePending(&done)
        }
        post(done)
    }

    // MARK: Under the lock

    /// Sends queued requests while the connection is up and the in-flight window allows:
    /// the request being issued first, then the queue's, in order. Each turn of the loop
    /// issues a command, or finishes, requeues or stops issuing a request.
    private func issuePending(_ done: inout Done) {
        guard let connection = state.connection else { return }
        while !connection.isDead, state.piecesInFlight < NBDBackend.maxPiecesInFlight {
            var o: Outstanding
            if let id = state.issuing, let partial = state.inFlight[id] {
                o = partial
            } else {
                state.issuing = nil
                guard !state.pending.isEmpty else { break }
                o = state.pending.removeFirst()
                if let refusal = refusal(of: o.request) {
                    finish(o, refusal, &done)
                    continue
                }
                if o.cursor.isMalformed {
                    finish(o, .ioError(errno: EINVAL), &done)
                    continue
                }
            }
            while state.piecesInFlight < NBDBackend.maxPiecesInFlight,
                  let piece = o.cursor.next(maxPayload: state.export.maximumPayload) {
                if o.piecesLeft == 0 { o.lastProgress = MonotonicTime.nanoseconds() }
                if piece.issue(on: connection.handle, sink.callback(request: o.id, attempt: o.attempt)) < 0 {
                    if connection.isDead { o.lost = true } else { o.error = NBDConnection.lastError().errno }
                    o.cursor.abandon()
                    break
                }
                o.piecesLeft += 1
                state.piecesInFlight += 1
            }
            state.peakPiecesInFlight = max(state.peakPiecesInFlight, state.piecesInFlight)
            if o.piecesLeft > 0 || !o.cursor.isFinished {
                state.inFlight[o.id] = o
                state.issuing = o.cursor.isFinished ? nil : o.id
                continue
            }
            // Nothing of it on the wire: done (an empty request), failed, or to resend.
            state.inFlight[o.id] = nil
            state.issuing = nil
            if o.lost {
                requeue([o], &done)
            } else if o.error != 0 {
                finish(o, .ioError(errno: o.error), &done)
            } else {
                finish(o, .ok, &done)
            }
        }
        // Issuing runs libnbd's state machine: the connection may have died, commands completed.
        let dead = connection.isDead
        drainCompletions(connectionLost: dead, &done)
        if dead {
            disconnect(&done)
        } else {
            updateWatch()
        }
    }

    /// What the current server cannot do; nil if the request may go.
    private func refusal(of request: BlockRequest) -> BlockResult? {
        let readOnly = state.geometry.readOnly || state.export.readOnly
        switch request {
        case .read: return nil
        case .write: return readOnly ? .ioError(errno: EROFS) : nil
        // A server that does not offer NBD_CMD_FLUSH has no volatile cache to flush: what
        // it acknowledged is on its storage. The flush succeeds without a round trip, as in
        // QEMU's NBD client (`nbd_client_co_flush` returns 0 without NBD_FLAG_SEND_FLUSH);
        // answered UNSUPP, it failed every write-through write (the device follows each
        // write with a flush) and every journal commit's PREFLUSH.
        case .flush: return state.export.canFlush ? nil : .ok
        case .discard: return readOnly ? .ioError(errno: EROFS) : state.export.canTrim ? nil : .unsupported
        case .writeZeroes: return readOnly ? .ioError(errno: EROFS) : state.export.canZero ? nil : .unsupported
        }
    }

    /// Takes what libnbd's callbacks recorded: finished requests complete; requests whose
    /// commands died with the connection go back to the front of the queue.
    private func drainCompletions(connectionLost: Bool, _ done: inout Done) {
        let entries = sink.entries
        sink.entries.removeAll()
        let now = entries.isEmpty ? 0 : MonotonicTime.nanoseconds()
        var retry: [Outstanding] = []
        for e in entries {
            guard var o = state.inFlight[e.request], o.attempt == e.attempt else { continue }
            o.piecesLeft -= 1
            o.lastProgress = now
            state.piecesInFlight = max(0, state.piecesInFlight - 1)
            if e.error != 0 {
                if connectionLost && NBDConnectionLoss.contains(e.error) { o.lost = true } else if o.error == 0 { o.error = e.error }
                o.cursor.abandon()   // the request has failed or will be resent: issue no more of it
            }
            guard o.piecesLeft <= 0, o.cursor.isFinished else {
                state.inFlight[o.id] = o
                continue
            }
            state.inFlight[o.id] = nil
            if state.issuing == o.id { state.issuing = nil }
            if o.error != 0 {
                finish(o, .ioError(errno: o.error), &done)
            } else if o.lost {
                retry.append(o)
            } else {
                finish(o, .ok, &done)
            }
        }
        requeue(retry, &done)
    }

    /// How many connections one request may be sent on. libnbd fails every command of a
    /// connection it drops with ENOTCONN, protocol errors included, and each successful
    /// handshake restarts the reconnect timeout: a server that drops the connection at one
    /// request (it crashes on it, or answers it with a cookie it was never sent) had that
    /// request resent for ever, ten reconnects a second, and the guest never answered.
    static let maxSends: UInt32 = 5

    /// Puts requests back at the front of the queue, for the next connection; one sent
    /// `maxSends` times fails with EIO instead.
    private func requeue(_ requests: [Outstanding], _ done: inout Done) {
        guard !requests.isEmpty else { return }
        var again: [Outstanding] = []
        for var o in requests.sorted(by: { $0.id < $1.id }) {
            guard o.attempt &+ 1 < NBDBackend.maxSends else {
                finish(o, .ioError(errno: EIO), &done)
                continue
            }
            o.attempt &+= 1
            o.piecesLeft = 0
            o.cursor.rewind()
            o.lost = false
            again.append(o)
        }
        state.pending.insert(contentsOf: again, at: 0)
    }

    /// The connection is gone: close it, keep its requests for the next one, wake the reconnect thread.
    private func disconnect(_ done: inout Done) {
        closeConnection()
        drainCompletions(connectionLost: true, &done)
        var keep: [Outstanding] = []
        for o in state.inFlight.values {
            if o.error != 0 { finish(o, .ioError(errno: o.error), &done) } else { keep.append(o) }
        }
        state.inFlight.removeAll()
        state.issuing = nil
        state.piecesInFlight = 0
        requeue(keep, &done)
        let now = MonotonicTime.nanoseconds()
        if state.downSince == nil { state.downSince = now }
        state.policy.reset()
        state.nextAttempt = now &+ NBDReconnectPolicy.nanoseconds(state.policy.nextDelay())
        lock.broadcast()
    }

    private func closeConnection() {
        if let w = state.watch {
            loop.unregister(w.registration)
            close(w.fd)
            state.watch = nil
        }
        let connection = state.connection
        state.connection = nil
        connection?.close()   // aborted commands report to the sink here
    }

    /// Watches `connection`'s socket on the loop and sends what waited. False if it cannot be watched.
    private func adopt(_ connection: NBDConnection, _ done: inout Done) -> Bool {
        let fd = fcntl(nbd_aio_get_fd(connection.handle), F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else {
            connection.close()
            return false
        }
        state.connectionSerial &+= 1
        let serial = state.connectionSerial
        let events = connection.wantedEvents
        let registration: IORegistration
        do {
            registration = try loop.register(fd: fd, events: events) { [weak self] ev in self?.socketReady(ev, connection: serial) }
        } catch {
            close(fd)
            connection.close()
            return false
        }
        state.watch = Watch(registration: registration, fd: fd, connection: serial, events: events)
        state.connection = connection
        state.export = connection.export
        state.downSince = nil
        state.failFast = false
        state.policy.reset()
        // The export may have grown or shrunk while we were away: tell the device (on the loop).
        let block = UInt64(state.geometry.logicalBlockSize)
        let size = connection.export.size / block * block
        if size != state.geometry.size {
            state.geometry.size = size
            if let handler = state.resizeHandler { loop.execute { handler(size) } }
        }
        issuePending(&done)
        return true
    }

    private func updateWatch() {
        guard let connection = state.connection, var w = state.watch else { return }
        let events = connection.wantedEvents
        guard events != w.events else { return }
        w.events = events
        state.watch = w
        loop.update(w.registration, events: events)
    }

    /// Past the timeout: every queued request fails, and new ones will at once.
    private func expireIfDue(_ done: inout Done) {
        guard let since = state.downSince, !state.failFast else { return }
        guard MonotonicTime.nanoseconds() >= since &+ NBDReconnectPolicy.nanoseconds(state.policy.timeout) else { return }
        state.failFast = true
        let waiting = state.pending
        state.pending.removeAll()
        for o in waiting { finish(o, .ioError(errno: ENOTCONN), &done) }
    }

    private func finish(_ o: Outstanding, _ result: BlockResult, _ done: inout Done) {
        switch result {
        case .ok:
            switch o.request {
            case let .read(_, segments):
                counters.reads.add(1, ordering: .relaxed)
                counters.bytesRead.add(UInt64(clamping: ScatterList.totalLength(segments.map(\.count)) ?? 0), ordering: .relaxed)
            case let .write(_, segments):
                counters.writes.add(1, ordering: .relaxed)
                counters.bytesWritten.add(UInt64(clamping: ScatterList.totalLength(segments.map(\.count)) ?? 0), ordering: .relaxed)
            case .flush: counters.flushes.add(1, ordering: .relaxed)
            case .discard: counters.discards.add(1, ordering: .relaxed)
            case .writeZeroes: counters.writeZeroes.add(1, ordering: .relaxed)
            }
        case .ioError: counters.errors.add(1, ordering: .relaxed)
        case .unsupported: break
        }
        done.append((o.completion, result))
    }

    private func post(_ done: Done) {
        for (completion, result) in done { loop.execute { completion(result) } }
    }

    // MARK: The reconnect thread

    private enum Step { case exit, connect, again }

    /// When the request waiting longest for the connected server will have had no answer
    /// for `requestTimeout`; nil when nothing is being waited for. A scan of at most the
    /// queue limit's requests, once per wake of the reconnect thread.
    private var stallDeadline: UInt64? {
        guard requestTimeout > 0, state.connection != nil, state.piecesInFlight > 0 else { return nil }
        var oldest: UInt64?
        for o in state.inFlight.values where o.piecesLeft > 0 { oldest = min(oldest ?? o.lastProgress, o.lastProgress) }
        return oldest.map { $0 &+ NBDReconnectPolicy.nanoseconds(requestTimeout) }
    }

    private func reconnectLoop() {
        while true {
            var done: Done = []
            let step = lock.withLock { () -> Step in
                if state.stopped { return .exit }
                expireIfDue(&done)
                if !done.isEmpty { return .again }
                guard state.connection == nil, let since = state.downSince else {
                    if let deadline = stallDeadline, MonotonicTime.nanoseconds() >= deadline {
                        counters.requestTimeouts.add(1, ordering: .relaxed)
                        disconnect(&done)
                        return .again
                    }
                    // Connected: wake when a stall would be due (with nothing in flight, a
                    // timeout from now, to look again), or when the connection goes.
                    var wake: MonotonicDeadline?
                    if requestTimeout > 0 {
                        let seconds = stallDeadline.map { Double($0 &- min($0, MonotonicTime.nanoseconds())) / 1e9 }
                        wake = MonotonicDeadline(secondsFromNow: seconds ?? requestTimeout)
                    }
                    _ = lock.wait(until: wake) { state.stopped || state.connection == nil }
                    return .again
                }
                let now = MonotonicTime.nanoseconds()
                if now >= state.nextAttempt { return .connect }
                var wake = state.nextAttempt
                if !state.failFast { wake = min(wake, since &+ NBDReconnectPolicy.nanoseconds(state.policy.timeout)) }
                let seconds = Double(wake &- now) / 1e9
                _ = lock.wait(until: MonotonicDeadline(secondsFromNow: seconds)) { state.stopped }
                return .again
            }
            post(done)
            switch step {
            case .exit: return
            case .again: continue
            case .connect: attemptReconnect()
            }
        }
    }

    private func attemptReconnect() {
        let result = NBDConnection.connect(uri: uri, timeout: NBDReconnectPolicy.handshakeTimeout) { [self] in
            // Called every 100 ms of the handshake: requests must not outlive the timeout meanwhile.
            var done: Done = []
            let stopped = lock.withLock { () -> Bool in
                expireIfDue(&done)
                return state.stopped
            }
            post(done)
            return stopped
        }
        var done: Done = []
        lock.withLock {
            let backoff = {
                self.state.nextAttempt = MonotonicTime.nanoseconds() &+ NBDReconnectPolicy.nanoseconds(self.state.policy.nextDelay())
            }
            guard case let .success(connection) = result else { return backoff() }
            guard !state.stopped else { return connection.close() }
            // A server that now needs larger blocks than the guest uses cannot serve this disk.
            guard connection.export.minimumBlockSize <= state.geometry.logicalBlockSize, adopt(connection, &done) else {
                connection.close()
                return backoff()
            }
            counters.reconnects.add(1, ordering: .relaxed)
        }
        post(done)
    }
}
