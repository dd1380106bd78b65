import Synchronization
import VMMCore

/// Makes a clean wire unreliable for experiments: drops, duplicates, corrupts, reorders,
/// delays and rate-limits frames. Decisions come from a seeded SplitMix64, so the same seed
/// and the same traffic give the same run. Wraps any backend from a NIC's `fault-*`
/// options, or is put in front of a running one by `LinkControl` (QMP
/// `x-swiftvmm-set-faults`) with `attach(upstream:)`.
///
/// Bounded: at most `maxHeld` frames wait in each direction (delayed, duplicated or
/// reordered); past that, received frames push back on the backend and sent frames are
/// dropped and counted (`.fault`).
public final class FaultFilter: NetworkBackend, FrameReceiver, @unchecked Sendable {
    /// What the filter did, for tests and statistics.
    public final class Statistics: Sendable {
        public let dropped = Atomic<UInt64>(0), duplicated = Atomic<UInt64>(0), corrupted = Atomic<UInt64>(0)
        public let delayed = Atomic<UInt64>(0), rateLimited = Atomic<UInt64>(0), reordered = Atomic<UInt64>(0)
    }

    /// Frames that may wait in one direction.
    public static let maxHeld = 1024
    /// How long a frame held back for reordering waits for one to overtake it.
    public static let reorderWindow: UInt64 = 5_000_000

    public let inner: NetworkBackend
    public let config: FaultConfig
    /// Frames that crossed the filter on the device's side; drops carry `.fault`.
    public let counters = BackendCounters()
    public let statistics = Statistics()
    public var description: String { "\(inner.description)+faults" }
    public var capabilities: BackendCapabilities { inner.capabilities }
    public var isLinkUp: Bool { inner.isLinkUp }

    private let loop: EventLoop
    private let clock: DeviceClock
    private weak var upstream: FrameReceiver?

    private struct Decision { var drop = false, duplicate = false, reorder = false, corruptAt: Int?, corruptMask: UInt8 = 0 }
    private struct Held { var bytes: [UInt8]; var header: VirtioNetHeader?; var due: UInt64 }
    private struct State {
        var rng: SplitMix64
        var tokens: Double
        var lastRefill: UInt64
        /// Received frames waiting for their delay to pass or for the device to take them, in order.
        var held: [Held] = []
        /// We refused the inner backend a frame: it waits for resumeReceive.
        var innerPaused = false
        /// The device refused a held frame that was due: new frames wait behind it (order,
        /// back-pressure). Frames held only for their delay do not stop new ones.
        var upstreamRefused = false
        var timers: Set<TimerToken> = []
        var stopped = false
        /// Sent frames waiting in timers (delay).
        var sendsWaiting = 0
        /// A sent frame held back until the next one has gone (reorder).
        var reorderedSend: (bytes: [UInt8], header: VirtioNetHeader?)?
        /// A received frame held back until the next one has been delivered (reorder).
        var reorderedReceive: Held?
        /// What was decided for the frame the device refused: the backend offers that same
        /// frame again first, and it must not draw (or pay rate tokens) twice.
        var refusedDecision: Decision?
    }
    private let state: Mutex<State>
    private let bucketBits: Double

    public init(wrapping inner: NetworkBackend, config: FaultConfig, eventLoop: EventLoop, clock: DeviceClock) {
        self.inner = inner
        self.config = config
        loop = eventLoop
        self.clock = clock
        // Burst: 20 ms at the configured rate, at least one 64 KiB GSO frame.
        bucketBits = max(Double(config.rateBitsPerSecond) / 50, 65_536 * 8)
        state = Mutex(State(rng: SplitMix64(seed: config.seed), tokens: bucketBits, lastRefill: clock.now))
    }

    public func start(receiver: FrameReceiver) {
        upstream = receiver
        inner.start(receiver: self)
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard let length = ScatterList.totalLength(segments) else { return count(inner.send(segments, header: header), length: 0) }
        guard config.direction != .rx else { return count(inner.send(segments, header: header), length: length) }
        let d = decide(length: length)
        if d.drop {
            counters.dropped(.fault)
            return .dropped(.fault)
        }
        if d.reorder, config.delay == 0 {
            // Held back until the next frame has gone, or the reorder window ends.
            var copy = [UInt8](repeating: 0, count: length)
            copy.withUnsafeMutableBytes { _ = ScatterList.gather(segments, into: $0) }
            let previous = state.withLock { s -> (bytes: [UInt8], header: VirtioNetHeader?)? in
                defer { s.reorderedSend = (copy, header) }
                return s.reorderedSend
            }
            if let previous { sendHeldBack(previous) }
            after(Self.reorderWindow) { [weak self] in self?.flushReordered() }
            return .sent
        }
        guard d.corruptAt != nil || config.delay > 0 else {
            let result = count(inner.send(segments, header: header), length: length)
            if d.duplicate, result == .sent { _ = count(inner.send(segments, header: header), length: length) }
            flushReordered()
            return result
        }
        // Guest buffers are never written: corrupt and delay work on a copy.
        var copy = [UInt8](repeating: 0, count: length)
        copy.withUnsafeMutableBytes { _ = ScatterList.gather(segments, into: $0) }
        if let at = d.corruptAt, at < copy.count { copy[at] ^= d.corruptMask }
        let frame = copy
        let sendCopy: @Sendable () -> SendResult = { [inner] in
            frame.withUnsafeBytes { inner.send([$0], header: header) }
        }
        if config.delay > 0 {
            let room = state.withLock { s -> Bool in
                guard s.sendsWaiting < Self.maxHeld else { return false }
                s.sendsWaiting += 1
                return true
            }
            guard room else {
                counters.dropped(.fault)
                return .dropped(.fault)
            }
            statistics.delayed.add(1, ordering: .relaxed)
            after(config.delay) { [weak self] in
                guard let self else { return }
                self.state.withLock { $0.sendsWaiting -= 1 }
                _ = self.count(sendCopy(), length: length)
                if d.duplicate { _ = self.count(sendCopy(), length: length) }
            }
            return .sent
        }
        let result = count(sendCopy(), length: length)
        if d.duplicate, result == .sent { _ = count(sendCopy(), length: length) }
        flushReordered()
        return result
    }

    private func sendHeldBack(_ frame: (bytes: [UInt8], header: VirtioNetHeader?)) {
        let result = frame.bytes.withUnsafeBytes { inner.send([$0], header: frame.header) }
        _ = count(result, length: frame.bytes.count)
    }

    /// Sends the frame held back for reordering, if any (after the one that overtook it).
    private func flushReordered() {
        guard let held = state.withLock({ s -> (bytes: [UInt8], header: VirtioNetHeader?)? in
            defer { s.reorderedSend = nil }
            return s.reorderedSend
        }) else { return }
        sendHeldBack(held)
    }

    public func resumeReceive() {
        // If the filter is taken out (and freed) before this runs, the device's request
        // still reaches the backend, which may hold a frame the device refused.
        loop.execute { [weak self, inner] in
            if let self { self.deliverHeld() } else { inner.resumeReceive() }
        }
    }

    public func setReceiveOffloads(_ offloads: NetOffloads) { inner.setReceiveOffloads(offloads) }

    public func stop() {
        inner.stop()
        detach()
    }

    /// Puts the filter in front of `inner`, which is already running and delivering to
    /// whoever placed this filter (LinkControl forwards to `receive`): frames go to
    /// `upstream` without restarting the backend.
    public func attach(upstream receiver: FrameReceiver) {
        upstream = receiver
    }

    /// Takes the filter out again without stopping the backend: frames it held are lost
    /// (as on a real faulty wire), timers are cancelled, and a backend it pushed back on may
    /// deliver again.
    public func detach() {
        let (timers, paused) = state.withLock { s -> (Set<TimerToken>, Bool) in
            s.stopped = true
            s.held.removeAll()
            s.reorderedSend = nil
            s.reorderedReceive = nil
            s.refusedDecision = nil
            s.upstreamRefused = false
            defer { s.timers.removeAll(); s.innerPaused = false }
            return (s.timers, s.innerPaused)
        }
        for t in timers { clock.cancel(t) }
        upstream = nil
        if paused { inner.resumeReceive() }
    }

    // MARK: FrameReceiver (from the wrapped backend, loop thread)

    public func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        guard let upstream else { return false }
        // While the device refuses a due frame, or `maxHeld` wait, the backend keeps its
        // frame too. Frames that only wait for their delay let new ones join behind them:
        // holding the backend back then passed one frame per delay period.
        let (blocked, queued) = state.withLock { s -> (Bool, Bool) in
            let blocked = s.upstreamRefused || s.held.count >= Self.maxHeld
            if blocked { s.innerPaused = true }
            return (blocked, !s.held.isEmpty)
        }
        if blocked { return false }
        guard config.direction != .tx else { return deliver(frame, header: header, to: upstream) }
        let d = state.withLock { s -> Decision? in defer { s.refusedDecision = nil }; return s.refusedDecision }
            ?? decide(length: frame.count)
        if d.drop {
            counters.dropped(.fault)
            return true
        }
        if d.reorder, config.delay == 0, d.corruptAt == nil, !queued {
            // Delivered after the next frame (or when the reorder window ends).
            let stashed = state.withLock { s -> Bool in
                guard s.reorderedReceive == nil else { return false }
                s.reorderedReceive = Held(bytes: Array(frame), header: header, due: 0)
                return true
            }
            if stashed {
                after(Self.reorderWindow) { [weak self] in self?.flushReorderedReceive() }
                return true
            }
        }
        if d.corruptAt == nil, config.delay == 0, !queued {
            guard deliver(frame, header: header, to: upstream) else {
                state.withLock { $0.refusedDecision = d }
                return false
            }
            flushReorderedReceive()
            if d.duplicate {
                hold(Array(frame), header: header, due: 0)
                deliverHeld()
            }
            return true
        }
        var copy = Array(frame)
        if let at = d.corruptAt, at < copy.count { copy[at] ^= d.corruptMask }
        let due = config.delay > 0 ? clock.now &+ config.delay : 0
        if config.delay > 0 { statistics.delayed.add(1, ordering: .relaxed) }
        hold(copy, header: header, due: due)
        if d.duplicate { hold(copy, header: header, due: due) }
        if config.delay > 0 {
            after(config.delay) { [weak self] in self?.deliverHeld() }
        } else {
            deliverHeld()
        }
        return true
    }

    public func linkStateChanged(up: Bool) { upstream?.linkStateChanged(up: up) }

    // MARK: Internals

    private func deliver(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?, to upstream: FrameReceiver) -> Bool {
        guard upstream.receive(frame, header: header) else { return false }
        counters.received(bytes: frame.count)
        return true
    }

    /// Delivers the received frame held back for reordering; if the device has no room,
    /// it waits at the front of the held frames.
    private func flushReorderedReceive() {
        guard let upstream, let frame = state.withLock({ s -> Held? in defer { s.reorderedReceive = nil }; return s.reorderedReceive })
        else { return }
        if !frame.bytes.withUnsafeBytes({ deliver($0, header: frame.header, to: upstream) }) {
            state.withLock { $0.held.insert(frame, at: 0) }
        }
    }

    /// Keeps a received frame for later; past `maxHeld` the copy is dropped and counted.
    private func hold(_ bytes: [UInt8], header: VirtioNetHeader?, due: UInt64) {
        let kept = state.withLock { s -> Bool in
            guard s.held.count < Self.maxHeld else { return false }
            s.held.append(Held(bytes: bytes, header: header, due: due))
            return true
        }
        if !kept { counters.dropped(.fault) }
    }

    /// Hands due held frames to the device in order; when none is left, lets the backend go on.
    private func deliverHeld() {
        while true {
            let now = clock.now
            guard let upstream,
                  let next = state.withLock({ s -> Held? in s.held.first.flatMap { $0.due <= now ? $0 : nil } })
            else { break }
            guard next.bytes.withUnsafeBytes({ deliver($0, header: next.header, to: upstream) }) else {
                state.withLock { $0.upstreamRefused = true }
                return
            }
            state.withLock { s in
                _ = s.held.removeFirst()
                s.upstreamRefused = false
            }
        }
        let resumeInner = state.withLock { s -> Bool in
            guard !s.upstreamRefused, s.held.count < Self.maxHeld else { return false }
            defer { s.innerPaused = false }
            return s.innerPaused
        }
        // Also forwarded when the device asked: the backend may hold a refused frame itself.
        if resumeInner || state.withLock({ $0.held.isEmpty }) { inner.resumeReceive() }
    }

    private func decide(length: Int) -> Decision {
        let now = clock.now
        return state.withLock { s in
            var d = Decision()
            if config.rateBitsPerSecond > 0 {
                let elapsed = Double(now &- s.lastRefill) / 1e9
                s.lastRefill = now
                s.tokens = min(bucketBits, s.tokens + elapsed * Double(config.rateBitsPerSecond))
                let bits = Double(length) * 8
                if s.tokens < bits {
                    statistics.rateLimited.add(1, ordering: .relaxed)
                    d.drop = true
                    return d
                }
                s.tokens -= bits
            }
            if s.rng.chance(config.dropPercent) {
                statistics.dropped.add(1, ordering: .relaxed)
                d.drop = true
                return d
            }
            if length > 0, s.rng.chance(config.corruptPercent) {
                d.corruptAt = Int(s.rng.next() % UInt64(length))
                d.corruptMask = UInt8(truncatingIfNeeded: s.rng.next()) | 1
                statistics.corrupted.add(1, ordering: .relaxed)
            }
            if s.rng.chance(config.duplicatePercent) {
                d.duplicate = true
                statistics.duplicated.add(1, ordering: .relaxed)
            }
            if s.rng.chance(config.reorderPercent) {
                d.reorder = true
                statistics.reordered.add(1, ordering: .relaxed)
            }
            return d
        }
    }

    private func count(_ result: SendResult, length: Int) -> SendResult {
        counters.record(result, bytes: length)
        return result
    }

    /// Runs `work` on the loop `delay` ns from now (timers of a virtual clock fire on the
    /// stepping thread; the loop serialises them with frames from the backend).
    private func after(_ delay: UInt64, _ work: @escaping @Sendable () -> Void) {
        let box = Mutex<TimerToken?>(nil)
        let token = clock.schedule(at: clock.now &+ delay) { [weak self] in
            guard let self else { return }
            if let t = box.withLock({ $0 }) { self.state.withLock { _ = $0.timers.remove(t) } }
            self.loop.execute(work)
        }
        box.withLock { $0 = token }
        state.withLock { s in
            if s.stopped { clock.cancel(token) } else { s.timers.insert(token) }
        }
    }
}
