import Synchronization
import VMMNet

/// The device side of one backend: the receiver, the link state it was last told, and
/// the frame it refused. Back-pressure (FrameReceiver's contract): when `offer` returns
/// false the backend stops reading and the refused frame waits here until `retry`. A
/// backend that reads several frames per event (TAP) hands them over with `deliver`
/// and keeps the refused ones in its own buffer, where they already are.
final class ReceiverPort: @unchecked Sendable {
    /// Refused frames, copied out of the backend's buffer (at most one delivery's worth:
    /// a backend reads nothing more while any are held).
    private struct Held {
        var bytes: [UInt8] = []
        var frames: [(range: Range<Int>, header: VirtioNetHeader?)] = []
    }
    private struct State {
        var receiver: FrameReceiver?
        var held = Held()
        var linkUp: Bool
    }
    private let state: Mutex<State>
    let counters: BackendCounters

    init(counters: BackendCounters, linkUp: Bool) {
        self.counters = counters
        state = Mutex(State(receiver: nil, linkUp: linkUp))
    }

    var isLinkUp: Bool { state.withLock { $0.linkUp } }
    var isHolding: Bool { state.withLock { !$0.held.frames.isEmpty } }

    func attach(_ receiver: FrameReceiver) { state.withLock { $0.receiver = receiver } }

    /// Forgets the receiver and any held frame (stop()).
    func detach() { state.withLock { $0.receiver = nil; $0.held = Held() } }

    /// Hands `frames` (a read loop's worth, already read) to the device in one delivery
    /// and answers how many are done with, from the first: taken, or lost because the
    /// port is detached (no device, as on a cable with no NIC: counted). The caller keeps
    /// the rest, stops reading, and offers them again after `resumeReceive`. The frames
    /// are counted once for the delivery (two atomic additions, not two per frame).
    /// Loop thread only.
    func deliver(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        guard !frames.isEmpty else { return 0 }
        // The receiver is called without our lock held: it takes the device's lock, and
        // the device may call back into the backend (resumeReceive, send).
        guard let receiver = state.withLock({ $0.receiver }) else {
            counters.dropped(.linkDown, count: frames.count)
            return frames.count
        }
        let accepted = min(max(receiver.receive(frames), 0), frames.count)
        count(frames.prefix(accepted))
        return accepted
    }

    /// One frame, which is held here (copied) when the device refuses it. False: it was
    /// refused, or the port is detached; the caller stops reading until `retry()`.
    func offer(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        guard let receiver = state.withLock({ $0.receiver }) else { return false }
        guard !receiver.receive(frame, header: header) else {
            counters.received(bytes: frame.count)
            return true
        }
        var one = ReceivedFrame(frame, header: header)
        withUnsafePointer(to: &one) { hold(UnsafeBufferPointer(start: $0, count: 1)[...], for: receiver) }
        return false
    }

    private func count(_ frames: Slice<UnsafeBufferPointer<ReceivedFrame>>) {
        guard !frames.isEmpty else { return }
        var tally = BackendCounters.Tally()
        for frame in frames { tally.add(bytes: frame.bytes.count) }
        counters.received(tally)
    }

    /// Keeps the refused frames, unless `receiver` was detached meanwhile (a `stop` on
    /// another thread while it was being called): then they are forgotten, as `detach`
    /// promises, and counted as lost.
    private func hold(_ frames: Slice<UnsafeBufferPointer<ReceivedFrame>>, for receiver: FrameReceiver) {
        var copy = Held()
        copy.bytes.reserveCapacity(frames.reduce(0) { $0 + $1.bytes.count })
        for frame in frames {
            let start = copy.bytes.count
            copy.bytes.append(contentsOf: frame.bytes)
            copy.frames.append((start ..< copy.bytes.count, frame.header))
        }
        let kept = state.withLock { s -> Bool in
            guard s.receiver === receiver else { return false }
            s.held = copy
            return true
        }
        if !kept { counters.dropped(.linkDown, count: frames.count) }
    }

    /// Offers the held frames again. True when nothing is held any more.
    func retry() -> Bool {
        guard let (receiver, held) = state.withLock({ s -> (FrameReceiver, Held)? in
            guard let r = s.receiver, !s.held.frames.isEmpty else { return nil }
            return (r, s.held)
        }) else { return !isHolding }
        let accepted = held.bytes.withUnsafeBytes { raw -> Int in
            let frames = held.frames.map { ReceivedFrame(UnsafeRawBufferPointer(rebasing: raw[$0.range]), header: $0.header) }
            let accepted = frames.withUnsafeBufferPointer { min(max(receiver.receive($0), 0), $0.count) }
            frames.withUnsafeBufferPointer { count($0.prefix(accepted)) }
            return accepted
        }
        guard accepted > 0 else { return false }
        return state.withLock { s in
            // Detached (or replaced) meanwhile: nothing of ours is held any more.
            guard s.held.frames.count == held.frames.count else { return s.held.frames.isEmpty }
            s.held.frames.removeFirst(accepted)
            if s.held.frames.isEmpty { s.held = Held() }
            return s.held.frames.isEmpty
        }
    }

    /// Records the link state and tells the receiver when it changed.
    func setLink(up: Bool) {
        let receiver = state.withLock { s -> FrameReceiver? in
            guard s.linkUp != up else { return nil }
            s.linkUp = up
            return s.receiver
        }
        receiver?.linkStateChanged(up: up)
    }
}
