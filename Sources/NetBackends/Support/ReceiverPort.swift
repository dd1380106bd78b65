import Synchronization
import VMMNet

/// The device side of one backend: the receiver, the link state it was last told, and
/// the frame it refused. Back-pressure (FrameReceiver's contract): when `offer` returns
/// false the backend stops reading and the refused frame waits here until `retry`. A
/// backend that reads several frames per event (TAP) hands them over with `deliver`
/// and keeps the refused ones in its own buffer, where they already are.
final class ReceiverPort: @unchecked Sendable {
    /// The refused frame, copied out of the backend's buffer.
    private struct Pending { var bytes: [UInt8]; var header: VirtioNetHeader? }
    private struct State {
        var receiver: FrameReceiver?
        var pending: Pending?
        var linkUp: Bool
    }
    private let state: Mutex<State>
    let counters: BackendCounters

    init(counters: BackendCounters, linkUp: Bool) {
        self.counters = counters
        state = Mutex(State(receiver: nil, pending: nil, linkUp: linkUp))
    }

    var isLinkUp: Bool { state.withLock { $0.linkUp } }
    var isHolding: Bool { state.withLock { $0.pending != nil } }

    func attach(_ receiver: FrameReceiver) { state.withLock { $0.receiver = receiver } }

    /// Forgets the receiver, and the held frame, which is counted lost (stop()).
    func detach() {
        let dropped = state.withLock { s -> Bool in
            defer { s.receiver = nil; s.pending = nil }
            return s.pending != nil
        }
        if dropped { counters.dropped(.linkDown) }
    }

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
    /// refused, or the port is detached (then it is lost, and counted); the caller stops
    /// reading until `retry()`.
    func offer(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        guard let receiver = state.withLock({ $0.receiver }) else {
            counters.dropped(.linkDown)
            return false
        }
        if receiver.receive(frame, header: header) {
            counters.received(bytes: frame.count)
            return true
        }
        // Held only for the receiver that refused it: detached meanwhile (a `stop` on
        // another thread while it was being called), the frame is lost, and counted.
        let copy = Pending(bytes: Array(frame), header: header)
        let kept = state.withLock { s -> Bool in
            guard s.receiver === receiver else { return false }
            s.pending = copy
            return true
        }
        if !kept { counters.dropped(.linkDown) }
        return false
    }

    private func count(_ frames: Slice<UnsafeBufferPointer<ReceivedFrame>>) {
        guard !frames.isEmpty else { return }
        var tally = BackendCounters.Tally()
        for frame in frames { tally.add(bytes: frame.bytes.count) }
        counters.received(tally)
    }

    /// Offers the held frame again. True when nothing is held any more.
    func retry() -> Bool {
        guard let (receiver, pending) = state.withLock({ s -> (FrameReceiver, Pending)? in
            guard let r = s.receiver, let p = s.pending else { return nil }
            return (r, p)
        }) else { return !isHolding }
        guard pending.bytes.withUnsafeBytes({ receiver.receive($0, header: pending.header) }) else { return false }
        counters.received(bytes: pending.bytes.count)
        state.withLock { $0.pending = nil }
        return true
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
