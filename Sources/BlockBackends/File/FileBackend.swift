#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VMMBlock
import VMMCore

/// A raw disk image or block device, served by a small fixed pool of worker threads
/// doing blocking preadv/pwritev (a slow disk never blocks a vCPU or the I/O loop).
/// Requests wait in a bounded FIFO; completions are posted to the I/O loop.
public final class FileBackend: BlockBackend, @unchecked Sendable {
    public static let defaultWorkers = 4
    /// How long a `block_resize` waits for the writes already in progress (`ResizeGate`).
    static let resizeWait = 10.0
    /// Bounce (O_DIRECT) and zero-writing buffer per worker.
    static let scratchSize = 1 << 20

    public let description: String
    public let counters = BlockCounters()
    public var geometry: BlockGeometry { state.withLock { $0.geometry } }

    private struct State {
        var geometry: BlockGeometry
        var stopped = false
        var onResize: (@Sendable (UInt64) -> Void)?
    }

    private struct Job {
        let request: BlockRequest
        let completion: @Sendable (BlockResult) -> Void
    }

    private let loop: EventLoop
    private let path: String
    private let disk: FileDisk
    private let direct: Bool
    private let state: Mutex<State>
    private let queue: BoundedWorkQueue<Job>
    private var workers: [WorkerThread] = []
    /// Cleared the first time FALLOC_FL_ZERO_RANGE is refused: then zeroes are written.
    private let zeroRangeWorks = Atomic<Bool>(true)
    /// The error of the first `fdatasync` that failed, held by the flush lock: flushes run
    /// one at a time, and once one failed every later one fails too. Linux reports a
    /// writeback error once per open file and marks the pages clean, their data lost, so a
    /// later `fdatasync` returns 0: without this a write-through write, or a guest's
    /// retried FLUSH, would be acknowledged as durable though an earlier writeback dropped
    /// it ("fsyncgate"). QEMU does the same (file-posix.c `handle_aiocb_flush`,
    /// `page_cache_inconsistent`; one flush at a time, `bdrv_co_flush`). With O_DIRECT the
    /// page cache holds none of the guest's data, and a failure is not kept.
    ///
    /// It also holds how many write-like requests had finished (`writesFinished`) when the
    /// last `fdatasync` that succeeded started (`flushed`): a flush whose writes that covers
    /// returns at once, riding on it, as QEMU's do (`bdrv_co_flush`: flushed_gen, write_gen).
    /// N flushes queued together cost one `fdatasync`, not N in a row holding every worker.
    private let flushLock = Mutex<(failed: Int32?, flushed: UInt64)>((nil, 0))
    private let writesFinished = Atomic<UInt64>(0)
    /// `fdatasync` calls made (tests).
    let syncCalls = Atomic<UInt64>(0)
    /// Workers still running; the last one to leave flushes what the guest left unflushed.
    private let runningWorkers = Atomic<Int>(0)
    /// Writes check their range and write inside it; a resize waits for them.
    private let resizeGate = ResizeGate()

    public convenience init(path: String, readOnly: Bool, direct: Bool, blockSize: UInt32?, queueLimit: Int = DiskBackendConfig.defaultQueueLimit,
                            workers: Int = FileBackend.defaultWorkers, eventLoop: EventLoop) throws(DiskBackendError) {
        try self.init(path: path, readOnly: readOnly, direct: direct, blockSize: blockSize, queueLimit: queueLimit,
                      workerCount: max(1, workers), eventLoop: eventLoop)
    }

    /// `workerCount` 0 (tests only): requests queue up and nothing runs them, so the queue's
    /// bound and `stop()`'s cancellation can be checked without racing a worker.
    init(path: String, readOnly: Bool, direct: Bool, blockSize: UInt32?, queueLimit: Int,
         workerCount: Int, eventLoop: EventLoop) throws(DiskBackendError) {
        disk = try FileDisk.open(path: path, readOnly: readOnly, direct: direct)
        self.path = path
        self.direct = direct
        loop = eventLoop
        description = "file \(path)" + (readOnly ? " (read-only)" : "") + (direct ? " (direct)" : "")
        // A block device's sector size is a floor: the guest cannot address less.
        let deviceSector = disk.deviceSectorSize.map { $0 <= 512 ? UInt32(512) : 4096 } ?? 512
        if let blockSize, blockSize < deviceSector {
            close(disk.fd)
            throw .notADisk(path: path, reason: "block-size=\(blockSize) is smaller than the device's \(disk.deviceSectorSize ?? deviceSector)-byte sectors")
        }
        let logical = blockSize ?? deviceSector
        let physical = disk.preferredIOSize >= 4096 && disk.preferredIOSize % 4096 == 0 ? max(logical, 4096) : logical
        let limit = max(1, queueLimit)
        state = Mutex(State(geometry: BlockGeometry(
            size: disk.size, logicalBlockSize: logical, physicalBlockSize: physical, readOnly: readOnly,
            canFlush: true, canDiscard: disk.canPunchHoles, canWriteZeroes: !readOnly, queueLimit: limit)))
        queue = BoundedWorkQueue(limit: limit)
        runningWorkers.store(max(0, workerCount), ordering: .relaxed)
        for i in 0 ..< max(0, workerCount) {
            let io = FileIO(fd: disk.fd, direct: direct, scratch: AlignedBuffer(count: FileBackend.scratchSize))
            guard let thread = WorkerThread(name: "blk-file-\(i)", role: .disk, { [self] in self.work(io) }) else {
                let e = errno
                runningWorkers.subtract(max(0, workerCount) - i, ordering: .relaxed)
                stop()
                throw .system(option: "disk", value: path, call: "pthread_create", errno: e, hint: nil)
            }
            workers.append(thread)
        }
    }

    deinit { stop() }

    public func submit(_ request: BlockRequest, completion: @escaping @Sendable (BlockResult) -> Void) -> Bool {
        switch queue.push(Job(request: request, completion: completion)) {
        case .accepted: return true
        case .full:
            counters.queueFull.add(1, ordering: .relaxed)
            return false
        case .closed:
            // Stopped: answer anyway (on the loop), so the device does not wait for a retry slot.
            counters.errors.add(1, ordering: .relaxed)
            post(.ioError(errno: ECANCELED), completion)
            return true
        }
    }

    public func resize(to bytes: UInt64) throws(BlockBackendError) {
        let g = geometry
        guard !g.readOnly else { throw .readOnly }
        guard disk.kind == .regularFile else { throw .resizeUnsupported("\(path) is a block device") }
        guard bytes % UInt64(g.logicalBlockSize) == 0 else {
            throw .resizeUnsupported("\(bytes) is not a multiple of the block size \(g.logicalBlockSize)")
        }
        guard let length = off_t(exactly: bytes) else { throw .resizeUnsupported("\(bytes) bytes is too large") }
        let resized = try resizeGate.resize(waitingAtMost: Self.resizeWait) { () throws(BlockBackendError) in
            try state.withLock { s throws(BlockBackendError) -> (@Sendable (UInt64) -> Void)? in
                guard !s.stopped else { throw .system(call: "resize", errno: EBADF) }
                while ftruncate(disk.fd, length) != 0 {
                    if errno != EINTR { throw .system(call: "ftruncate", errno: errno) }
                }
                s.geometry.size = bytes
                return s.onResize
            }
        }
        guard let resized else {
            throw .resizeUnsupported("writes in progress did not finish within \(Int(Self.resizeWait)) s; nothing was changed")
        }
        writesFinished.add(1, ordering: .releasing)   // the new size is for the next flush to make durable
        if let handler = resized { loop.execute { handler(bytes) } }
    }

    public func onResize(_ handler: @escaping @Sendable (UInt64) -> Void) {
        state.withLock { $0.onResize = handler }
    }

    /// Waits for the requests the workers are running, completes the waiting ones with
    /// ECANCELED, joins the workers and closes the file. Idempotent.
    public func stop() {
        let first = state.withLock { s -> Bool in
            defer { s.stopped = true }
            return !s.stopped
        }
        guard first else { return }
        for job in queue.close() {
            counters.errors.add(1, ordering: .relaxed)
            post(.ioError(errno: ECANCELED), job.completion)
        }
        for w in workers { w.join() }
        workers.removeAll()
        close(disk.fd)
    }

    // MARK: Workers

    private func work(_ io: FileIO) {
        while let job = queue.pop() {
            let result = perform(job.request, io)
            queue.finished()
            post(result, job.completion)
        }
        // Stopping: the last worker out flushes, as QEMU flushes a disk it closes
        // (`bdrv_close`), so what the guest wrote and never flushed is not left to the page
        // cache alone. On a worker: the disk role may `fdatasync`, the stopping thread not.
        if runningWorkers.subtract(1, ordering: .acquiringAndReleasing).newValue == 0, !geometry.readOnly {
            _ = flush(io)
        }
    }

    /// One `fdatasync` at a time, failing for good after the first failure (`flushLock`),
    /// and none when one that started after this flush's writes already succeeded.
    private func flush(_ io: FileIO) -> Int32 {
        let target = writesFinished.load(ordering: .acquiring)   // what this flush must make durable
        return flushLock.withLock { s in
            if let failed = s.failed { return failed }
            if s.flushed >= target { return 0 }
            let started = writesFinished.load(ordering: .acquiring)
            syncCalls.add(1, ordering: .relaxed)
            let e = io.flush()
            if e != 0 {
                if !direct { s.failed = e }
                return e
            }
            s.flushed = started
            return 0
        }
    }

    private func post(_ result: BlockResult, _ completion: @escaping @Sendable (BlockResult) -> Void) {
        loop.execute { completion(result) }
    }

    private func perform(_ request: BlockRequest, _ io: FileIO) -> BlockResult {
        switch request {
        case .read, .flush: return performInside(request, io)
        case .write, .discard, .writeZeroes:
            let result = resizeGate.write { performInside(request, io) }
            // Counted finished whatever the outcome: a failed write may still have changed
            // pages a later flush must cover.
            writesFinished.add(1, ordering: .releasing)
            return result
        }
    }

    /// Write-like requests run inside the resize gate: the size they check is the size
    /// their write meets.
    private func performInside(_ request: BlockRequest, _ io: FileIO) -> BlockResult {
        let g = geometry
        let result: BlockResult
        switch request {
        case let .read(offset, segments):
            result = outcome(io.read(offset: offset, into: segments))
            if result == .ok { count(counters.reads, counters.bytesRead, bytes: segments.reduce(0) { $0 &+ $1.count }) }
        case let .write(offset, segments):
            guard !g.readOnly else { return failed(EROFS) }
            guard Self.within(g, offset: offset, length: segments.reduce(UInt64(0)) { $0 &+ UInt64($1.count) }) else { return failed(ENOSPC) }
            result = outcome(io.write(offset: offset, from: segments))
            if result == .ok { count(counters.writes, counters.bytesWritten, bytes: segments.reduce(0) { $0 &+ $1.count }) }
        case .flush:
            result = g.readOnly ? .ok : outcome(flush(io))
            if result == .ok { counters.flushes.add(1, ordering: .relaxed) }
        case let .discard(offset, length):
            guard !g.readOnly else { return failed(EROFS) }
            guard g.canDiscard else { return .unsupported }
            guard Self.within(g, offset: offset, length: length) else { return failed(ENOSPC) }
            let e = io.punchHole(offset: offset, length: length)
            result = e == EOPNOTSUPP ? .unsupported : outcome(e)
            if result == .ok { counters.discards.add(1, ordering: .relaxed) }
        case let .writeZeroes(offset, length, mayUnmap):
            guard !g.readOnly else { return failed(EROFS) }
            guard Self.within(g, offset: offset, length: length) else { return failed(ENOSPC) }
            result = outcome(zero(io, offset: offset, length: length, mayUnmap: mayUnmap && g.canDiscard))
            if result == .ok { counters.writeZeroes.add(1, ordering: .relaxed) }
        }
        if case .ioError = result { counters.errors.add(1, ordering: .relaxed) }
        return result
    }

    /// Whether a write-like request still ends on the disk. The device checked it against
    /// the size when the guest asked; a `block_resize` that shrank the file since would be
    /// undone by writing past the new end (the file grows back, the VM reports the smaller
    /// size). Checked inside the resize gate, so no shrink comes between this and the write.
    private static func within(_ g: BlockGeometry, offset: UInt64, length: UInt64) -> Bool {
        let (end, wraps) = offset.addingReportingOverflow(length)
        return !wraps && end <= g.size
    }

    /// Cheapest first: deallocate (when allowed), let the filesystem zero the range, write zeroes.
    private func zero(_ io: FileIO, offset: UInt64, length: UInt64, mayUnmap: Bool) -> Int32 {
        if mayUnmap, io.punchHole(offset: offset, length: length) == 0 { return 0 }
        if zeroRangeWorks.load(ordering: .relaxed) {
            let e = io.zeroRange(offset: offset, length: length)
            guard e == EOPNOTSUPP else { return e }
            zeroRangeWorks.store(false, ordering: .relaxed)
        }
        return io.writeZeroes(offset: offset, length: length)
    }

    private func outcome(_ e: Int32) -> BlockResult { e == 0 ? .ok : .ioError(errno: e) }

    private func failed(_ e: Int32) -> BlockResult {
        counters.errors.add(1, ordering: .relaxed)
        return .ioError(errno: e)
    }

    private func count(_ ops: borrowing Atomic<UInt64>, _ bytes: borrowing Atomic<UInt64>, bytes n: Int) {
        ops.add(1, ordering: .relaxed)
        bytes.add(UInt64(clamping: n), ordering: .relaxed)
    }
}
