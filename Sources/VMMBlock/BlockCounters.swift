import Synchronization

/// What a block backend did, for QMP counters and tests. Updated with relaxed atomics
/// from the backend's threads.
public final class BlockCounters: Sendable {
    public let reads = Atomic<UInt64>(0)
    public let writes = Atomic<UInt64>(0)
    public let bytesRead = Atomic<UInt64>(0)
    public let bytesWritten = Atomic<UInt64>(0)
    public let flushes = Atomic<UInt64>(0)
    public let discards = Atomic<UInt64>(0)
    public let writeZeroes = Atomic<UInt64>(0)
    public let errors = Atomic<UInt64>(0)
    /// `submit` answered false: the queue was full.
    public let queueFull = Atomic<UInt64>(0)
    /// Reconnections to a remote server (NBD).
    public let reconnects = Atomic<UInt64>(0)
    /// Connections dropped because the server left a request unanswered for its request
    /// timeout (NBD `request-timeout=`).
    public let requestTimeouts = Atomic<UInt64>(0)

    public init() {}
}
