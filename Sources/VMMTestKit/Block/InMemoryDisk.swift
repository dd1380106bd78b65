import Synchronization
import VMMBlock
import VMMCore

/// A disk in memory for register-level tests of block devices. Requests complete on the
/// machine's I/O loop like a real backend's, so a test sees them when it runs the loop's
/// queued work (`TestMachine.runQueuedWork()`); `hold` keeps them pending until
/// `release()`, to test ordering and back-pressure.
public final class InMemoryDisk: BlockBackend, @unchecked Sendable {
    public var description: String { "memory disk (\(geometry.size) bytes)" }
    public let counters = BlockCounters()
    private struct State {
        var bytes: [UInt8]
        var geometry: BlockGeometry
        var queued = 0
        var held: [@Sendable () -> Void] = []
        var hold = false
        var failNext: BlockResult?
        var resizeHandler: (@Sendable (UInt64) -> Void)?
        var stopped = false
    }
    private let state: Mutex<State>
    private var loop: EventLoop?

    public init(size: Int, geometry: BlockGeometry? = nil) {
        var g = geometry ?? BlockGeometry(size: UInt64(size), canDiscard: true, canWriteZeroes: true)
        g.size = UInt64(size)
        state = Mutex(State(bytes: [UInt8](repeating: 0, count: size), geometry: g))
    }

    func attach(to loop: EventLoop) { self.loop = loop }

    public var geometry: BlockGeometry { state.withLock { $0.geometry } }
    public var contents: [UInt8] { state.withLock { $0.bytes } }
    public func write(_ data: [UInt8], at offset: Int) { state.withLock { $0.bytes.replaceSubrange(offset ..< offset + data.count, with: data) } }
    /// Requests accepted and not yet completed.
    public var queued: Int { state.withLock { $0.queued } }

    /// Keeps completions back until `release()`.
    public func hold() { state.withLock { $0.hold = true } }
    public func release() {
        let held = state.withLock { s -> [@Sendable () -> Void] in s.hold = false; defer { s.held = [] }; return s.held }
        for h in held { h() }
    }
    /// The next request completes with `result` instead of running.
    public func failNext(with result: BlockResult) { state.withLock { $0.failNext = result } }

    public func submit(_ request: BlockRequest, completion: @escaping @Sendable (BlockResult) -> Void) -> Bool {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopped, s.queued < s.geometry.queueLimit else { return false }
            s.queued += 1
            return true
        }
        guard accepted else { counters.queueFull.add(1, ordering: .relaxed); return false }
        // Buffers are guest memory the device keeps valid until completion.
        nonisolated(unsafe) let request = request
        let finish: @Sendable () -> Void = { [self] in
            let result = self.perform(request)
            self.state.withLock { $0.queued -= 1 }
            completion(result)
        }
        let deliver: @Sendable () -> Void = { [weak self] in
            guard let self else { return }
            let holding = self.state.withLock { s -> Bool in
                if s.hold { s.held.append(finish) }
                return s.hold
            }
            if !holding { finish() }
        }
        loop?.execute(deliver)
        return true
    }

    private func perform(_ request: BlockRequest) -> BlockResult {
        state.withLock { s -> BlockResult in
            if let f = s.failNext { s.failNext = nil; counters.errors.add(1, ordering: .relaxed); return f }
            switch request {
            case let .read(offset, buffers):
                var o = Int(offset)
                for b in buffers {
                    s.bytes.withUnsafeBytes { src in b.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[o ..< o + b.count])) }
                    o += b.count
                }
                counters.reads.add(1, ordering: .relaxed)
            case let .write(offset, buffers):
                guard !s.geometry.readOnly else { return .ioError(errno: 30) } // EROFS
                var o = Int(offset)
                for b in buffers {
                    s.bytes.withUnsafeMutableBytes { dst in UnsafeMutableRawBufferPointer(rebasing: dst[o ..< o + b.count]).copyMemory(from: b) }
                    o += b.count
                }
                counters.writes.add(1, ordering: .relaxed)
            case .flush:
                counters.flushes.add(1, ordering: .relaxed)
            case let .discard(offset, length), let .writeZeroes(offset, length, _):
                s.bytes.replaceSubrange(Int(offset) ..< Int(offset + length), with: repeatElement(0, count: Int(length)))
                counters.discards.add(1, ordering: .relaxed)
            }
            return .ok
        }
    }

    public func resize(to bytes: UInt64) throws(BlockBackendError) {
        let handler = state.withLock { s -> (@Sendable (UInt64) -> Void)? in
            s.bytes = Array(s.bytes.prefix(Int(bytes))) + [UInt8](repeating: 0, count: max(0, Int(bytes) - s.bytes.count))
            s.geometry.size = bytes
            return s.resizeHandler
        }
        if let handler { loop?.execute { handler(bytes) } }
    }

    public func onResize(_ handler: @escaping @Sendable (UInt64) -> Void) { state.withLock { $0.resizeHandler = handler } }
    public func stop() { state.withLock { $0.stopped = true } }
}

/// Hands out in-memory disks to block devices created in a `TestMachine`: the next one
/// queued with `enqueue`, else a fresh 1 MiB disk. Takes `disk=` and `readonly=`.
public final class InMemoryDiskFactory: BlockBackendFactory, @unchecked Sendable {
    private let pending = Mutex<[InMemoryDisk]>([])
    private let made = Mutex<[InMemoryDisk]>([])
    public init() {}
    public func enqueue(_ disk: InMemoryDisk) { pending.withLock { $0.append(disk) } }
    public var disks: [InMemoryDisk] { made.withLock { $0 } }

    public func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop) throws -> BlockBackend {
        _ = try options.take("disk")
        let readOnly = try options.takeBool("readonly") ?? false
        let disk = pending.withLock { $0.isEmpty ? nil : $0.removeFirst() } ?? InMemoryDisk(size: 1 << 20)
        if readOnly {
            var g = disk.geometry
            g.readOnly = true
            let copy = InMemoryDisk(size: Int(g.size), geometry: g)
            copy.write(disk.contents, at: 0)
            copy.attach(to: eventLoop)
            made.withLock { $0.append(copy) }
            return copy
        }
        disk.attach(to: eventLoop)
        made.withLock { $0.append(disk) }
        return disk
    }
}
