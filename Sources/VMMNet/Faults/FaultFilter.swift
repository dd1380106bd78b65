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
    /// A frame the filter keeps a copy of (corrupted, delayed or held back).
    private struct OwnedFrame { var bytes: [UInt8]; var header: VirtioNetHeader? }
    /// `id` names it while the device is handed it outside the lock: `detach` may empty
    /// the list meanwhile (a `serve` stopping), and only this frame may be removed after.
    private struct Held { var bytes: [UInt8]; var header: VirtioNetHeader?; var due: UInt64; var id: UInt64 = 0 }
    private struct State {
        var rng: SplitMix64
        var tokens: Double
        var lastRefill: UInt64
        /// Received frames waiting for their delay to pass or for the device to take them, in order.
        var held: [Held] = []
        var nextHeldID: UInt64 = 0
        /// We refused the inner backend a frame: it waits for resumeReceive.
        var innerPaused = false
        /// The device refused a held frame that was due: new frames wait behind it (order,
        /// back-pressure). Frames held only for their delay do not stop new ones.
        var upstreamRefused = false
        var timers: Set<TimerToken> = []
        var stopped = false
        /// Sent frames waiting in timers (delay).
        var sendsWaiting = 0
        /// A sent frame (its copies: segments, a duplicate) held back until the next one has
        /// gone (reorder), and since when.
        var reorderedSend: (frames: [OwnedFrame], since: UInt64)?
        /// A received frame held back until the next one has been delivered (reorder).
        var reorderedReceive: Held?
        /// A reorder window timer is pending, per direction: one at a time, however many
        /// frames are held back in turn (each used to add one, without bound on a clock
        /// that does not move).
        var reorderTimerPending = (send: false, receive: false)
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
        guard d.corruptAt != nil || config.delay > 0 || d.reorder else {
            let result = count(inner.send(segments, header: header), length: length)
            if d.duplicate, result == .sent { _ = count(inner.send(segments, header: header), length: length) }
            flushReordered(overtaken: true)
            return result
        }
        // Guest buffers are never written: corrupt, delay and reorder work on copies.
        guard var frames = copies(segments, header: header, corrupting: d, maxFrameSize: inner.capabilities.maxFrameSize) else {
            counters.dropped(.fault)
            return .dropped(.fault)
        }
        if d.duplicate { frames += frames }
        if d.reorder, config.delay == 0 {
            // Held back until the next frame has gone (or the window ends). One held
            // already: this one overtakes it, and neither waits.
            let now = clock.now
            let (previous, startTimer) = state.withLock { s -> ([OwnedFrame]?, Bool) in
                if let previous = s.reorderedSend {
                    s.reorderedSend = nil
                    return (previous.frames, false)
                }
                s.reorderedSend = (frames, now)
                defer { s.reorderTimerPending.send = true }
                return (nil, !s.reorderTimerPending.send)
            }
            if let previous {
                sendCopies(frames)
                statistics.reordered.add(1, ordering: .relaxed)
                sendCopies(previous)
            } else if startTimer {
                after(Self.reorderWindow) { [weak self] in self?.reorderWindowEnded(send: true) }
            }
            return .sent
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
            let delayed = frames
            after(config.delay) { [weak self] in
                guard let self else { return }
                self.state.withLock { $0.sendsWaiting -= 1 }
                self.sendCopies(delayed)
            }
            return .sent
        }
        let result = sendCopies(frames)
        flushReordered(overtaken: true)
        return result
    }

    /// Sends the filter's copies in order; the result is the first one's.
    @discardableResult
    private func sendCopies(_ frames: [OwnedFrame]) -> SendResult {
        var first: SendResult?
        for frame in frames {
            let result = frame.bytes.withUnsafeBytes { inner.send([$0], header: frame.header) }
            _ = count(result, length: frame.bytes.count)
            first = first ?? result
        }
        return first ?? .sent
    }

    /// Sends the frame held back for reordering, if any: after the one that overtook it, or
    /// when its window ended (then nothing overtook it, and it is not counted).
    private func flushReordered(overtaken: Bool) {
        guard let held = state.withLock({ s -> [OwnedFrame]? in
            defer { s.reorderedSend = nil }
            return s.reorderedSend?.frames
        }) else { return }
        if overtaken { statistics.reordered.add(1, ordering: .relaxed) }
        sendCopies(held)
    }

    /// The reorder window's timer: releases a frame held back for at least the window, or
    /// waits on for one held since it was started.
    private func reorderWindowEnded(send: Bool) {
        let now = clock.now
        let remaining = state.withLock { s -> UInt64? in
            let since = send ? s.reorderedSend?.since : s.reorderedReceive?.due
            guard let since, now &- since < Self.reorderWindow else {
                if send { s.reorderTimerPending.send = false } else { s.reorderTimerPending.receive = false }
                return nil
            }
            return Self.reorderWindow - (now &- since)
        }
        if let remaining {
            after(remaining) { [weak self] in self?.reorderWindowEnded(send: send) }
        } else if send {
            flushReordered(overtaken: false)
        } else {
            flushReorderedReceive(overtaken: false)
        }
    }

    /// Copies of a frame for the filter to keep, with `decision`'s corruption applied. A
    /// frame whose header leaves its checksum to the other side (NEEDS_CSUM, GSO) or says it
    /// was checked (DATA_VALID) would carry the flipped byte past every check, so it is
    /// first completed in software (segmented, checksummed) and its header cleared, as
    /// Linux's netem does before it corrupts (`netem_segment`, `skb_checksum_help`). Nil:
    /// the header asks for something that cannot be completed.
    private func copies(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?, corrupting d: Decision,
                        maxFrameSize: Int) -> [OwnedFrame]? {
        var frames: [OwnedFrame] = []
        if d.corruptAt != nil, let h = header, h.isGSO || h.flags & VirtioNetHeader.needsChecksum != 0 {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SoftwareOffload.recommendedBufferSize, alignment: 16)
            defer { buffer.deallocate() }
            do {
                try SoftwareOffload.complete(segments, header: h, maxFrameSize: maxFrameSize, buffer: buffer) {
                    frames.append(OwnedFrame(bytes: Array($0), header: VirtioNetHeader()))
                }
            } catch {
                return nil
            }
        } else {
            var copy = [UInt8](repeating: 0, count: ScatterList.totalLength(segments) ?? 0)
            copy.withUnsafeMutableBytes { _ = ScatterList.gather(segments, into: $0) }
            var h = header
            if d.corruptAt != nil { h?.flags &= ~VirtioNetHeader.dataValid }
            frames = [OwnedFrame(bytes: copy, header: h)]
        }
        if var at = d.corruptAt {
            for i in frames.indices {
                if at < frames[i].bytes.count {
                    frames[i].bytes[at] ^= d.corruptMask
                    break
                }
                at -= frames[i].bytes.count
            }
        }
        return frames
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
            s.reorderTimerPending = (false, false)
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

    /// The backend's frames one at a time, each given its own fault decision; stops at
    /// the first the filter or the device cannot take now.
    public func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        frames.acceptedPrefix { filter($0.bytes, header: $0.header) }
    }

    private func filter(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
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
        if d.reorder, config.delay == 0, d.corruptAt == nil, !d.duplicate, !queued {
            // Delivered after the next frame (or when the reorder window ends).
            let now = clock.now
            let (stashed, startTimer) = state.withLock { s -> (Bool, Bool) in
                guard s.reorderedReceive == nil else { return (false, false) }
                s.reorderedReceive = Held(bytes: Array(frame), header: header, due: now)
                defer { s.reorderTimerPending.receive = true }
                return (true, !s.reorderTimerPending.receive)
            }
            if stashed {
                if startTimer { after(Self.reorderWindow) { [weak self] in self?.reorderWindowEnded(send: false) } }
                return true
            }
        }
        if d.corruptAt == nil, config.delay == 0, !queued {
            guard deliver(frame, header: header, to: upstream) else {
                state.withLock { $0.refusedDecision = d }
                return false
            }
            flushReorderedReceive(overtaken: true)
            if d.duplicate {
                hold(Array(frame), header: header, due: 0)
                deliverHeld()
            }
            return true
        }
        guard let copies = copies([frame], header: header, corrupting: d, maxFrameSize: SoftwareOffload.recommendedBufferSize) else {
            counters.dropped(.fault)
            return true
        }
        let due = config.delay > 0 ? clock.now &+ config.delay : 0
        if config.delay > 0 { statistics.delayed.add(1, ordering: .relaxed) }
        for copy in copies { hold(copy.bytes, header: copy.header, due: due) }
        if d.duplicate { for copy in copies { hold(copy.bytes, header: copy.header, due: due) } }
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

    /// Delivers the received frame held back for reordering (after the one that overtook
    /// it, or when its window ended: then it is not counted); if the device has no room, it
    /// waits at the front of the held frames.
    private func flushReorderedReceive(overtaken: Bool) {
        guard let upstream, let frame = state.withLock({ s -> Held? in defer { s.reorderedReceive = nil }; return s.reorderedReceive })
        else { return }
        if overtaken { statistics.reordered.add(1, ordering: .relaxed) }
        if !frame.bytes.withUnsafeBytes({ deliver($0, header: frame.header, to: upstream) }) {
            state.withLock { s in
                guard !s.stopped else { return }
                s.nextHeldID &+= 1
                s.held.insert(Held(bytes: frame.bytes, header: frame.header, due: 0, id: s.nextHeldID), at: 0)
            }
        }
    }

    /// Keeps a received frame for later; past `maxHeld` the copy is dropped and counted.
    private func hold(_ bytes: [UInt8], header: VirtioNetHeader?, due: UInt64) {
        let kept = state.withLock { s -> Bool in
            guard s.held.count < Self.maxHeld else { return false }
            s.nextHeldID &+= 1
            s.held.append(Held(bytes: bytes, header: header, due: due, id: s.nextHeldID))
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
                if s.held.first?.id == next.id { s.held.removeFirst() }
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
            // Counted when a frame is overtaken, not here: a frame held back that nothing
            // overtakes within the window goes out in order.
            if s.rng.chance(config.reorderPercent) { d.reorder = true }
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
