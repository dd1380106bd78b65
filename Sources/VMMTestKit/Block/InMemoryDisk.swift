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
        var refuse = 0
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
    /// The next `count` submissions are refused as if the queue were full (back-pressure
    /// at a chosen moment, e.g. between a write and its flush).
    public func refuseNext(_ count: Int) { state.withLock { $0.refuse = count } }

    public func submit(_ request: BlockRequest, completion: @escaping @Sendable (BlockResult) -> Void) -> Bool {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopped, s.queued < s.geometry.queueLimit else { return false }
            if s.refuse > 0 { s.refuse -= 1; return false }
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

    /// Runs `request` against the disk as it is now. The device checked the request against
    /// the capacity it saw when it accepted it, but the disk may have shrunk since (a held
    /// request, then `resize`), so every range is checked again here: reads past the end
    /// get zeroes, as `pread` past a file's end does (FileIO); writes past it fail with
    /// ENOSPC; discards and write-zeroes stop at the end.
    private func perform(_ request: BlockRequest) -> BlockResult {
        state.withLock { s -> BlockResult in
            if let f = s.failNext { s.failNext = nil; counters.errors.add(1, ordering: .relaxed); return f }
            switch request {
            case let .read(offset, buffers):
                var position = offset
                for b in buffers {
                    let copied = s.bytes.withUnsafeBytes { src -> Int in
                        let part = Self.overlap(of: position, count: b.count, withSize: src.count)
                        if let from = part.first { b.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[from ..< from + part.count])) }
                        return part.count
                    }
                    if copied < b.count, let tail = b.baseAddress?.advanced(by: copied) {
                        tail.initializeMemory(as: UInt8.self, repeating: 0, count: b.count - copied)
                    }
                    position = position.addingReportingOverflow(UInt64(b.count)).partialValue
                }
                counters.reads.add(1, ordering: .relaxed)
            case let .write(offset, buffers):
                guard !s.geometry.readOnly else { return .ioError(errno: 30) } // EROFS
                let total = buffers.reduce(0) { $0 + $1.count }
                guard Self.overlap(of: offset, count: total, withSize: s.bytes.count).count == total else {
                    return .ioError(errno: 28) // ENOSPC: the disk does not grow
                }
                var o = Int(offset)
                for b in buffers {
                    s.bytes.withUnsafeMutableBytes { dst in UnsafeMutableRawBufferPointer(rebasing: dst[o ..< o + b.count]).copyMemory(from: b) }
                    o += b.count
                }
                counters.writes.add(1, ordering: .relaxed)
            case .flush:
                counters.flushes.add(1, ordering: .relaxed)
            case let .discard(offset, length), let .writeZeroes(offset, length, _):
                let part = Self.overlap(of: offset, count: Int(clamping: length), withSize: s.bytes.count)
                if let from = part.first { s.bytes.replaceSubrange(from ..< from + part.count, with: repeatElement(0, count: part.count)) }
                counters.discards.add(1, ordering: .relaxed)
            }
            return .ok
        }
    }

    /// The part of `[offset, offset + count)` that lies inside a disk of `size` bytes, as
    /// its first index (nil when nothing does) and length.
    private static func overlap(of offset: UInt64, count: Int, withSize size: Int) -> (first: Int?, count: Int) {
        guard offset < UInt64(size) else { return (nil, 0) }
        let first = Int(offset)
        return (first, min(count, size - first))
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
