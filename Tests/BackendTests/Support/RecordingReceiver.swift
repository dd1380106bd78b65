import Synchronization
import VMMCore
import VMMNet

/// A device stand-in: records frames and link changes; can refuse frames (no guest
/// buffers) to exercise back-pressure, and can answer frames from the loop thread.
final class RecordingReceiver: FrameReceiver, @unchecked Sendable {
    struct Frame { var bytes: [UInt8]; var header: VirtioNetHeader? }
    private let state = Mutex<(frames: [Frame], links: [Bool], accepting: Bool, refused: Int)>(([], [], true, 0))
    /// Called for each accepted frame on the loop thread (e.g. to answer ARP).
    let onFrame: (@Sendable ([UInt8]) -> Void)?

    init(onFrame: (@Sendable ([UInt8]) -> Void)? = nil) { self.onFrame = onFrame }

    var frames: [Frame] { state.withLock { $0.frames } }
    var links: [Bool] { state.withLock { $0.links } }
    var refusals: Int { state.withLock { $0.refused } }
    func setAccepting(_ on: Bool) { state.withLock { $0.accepting = on } }

    func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        frames.acceptedPrefix { receiveOne($0.bytes, header: $0.header) }
    }

    private func receiveOne(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        let bytes = Array(frame)
        let ok = state.withLock { s -> Bool in
            guard s.accepting else { s.refused += 1; return false }
            s.frames.append(Frame(bytes: bytes, header: header))
            return true
        }
        if ok { onFrame?(bytes) }
        return ok
    }

    func linkStateChanged(up: Bool) { state.withLock { $0.links.append(up) } }

    func first(where match: ([UInt8]) -> Bool) -> [UInt8]? { frames.first { match($0.bytes) }?.bytes }
}

extension NetworkBackend {
    /// Sends one contiguous frame.
    @discardableResult
    func send(_ frame: [UInt8], header: VirtioNetHeader? = nil) -> SendResult {
        frame.withUnsafeBytes { send([$0], header: header) }
    }
}
