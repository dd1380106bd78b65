import Logging
import Synchronization

/// Logs what a guest did wrong without letting a guest flood the host's log: at most
/// `burst` messages per `key` per window, then one "suppressed N" line when the window ends.
/// Guest-triggered problems go through this; user-facing errors do not.
public final class RateLimitedLogger: Sendable {
    public let logger: Logger
    private let burst: Int
    private let windowNanoseconds: UInt64
    private struct Bucket { var windowStart: UInt64; var count: Int; var suppressed: Int }
    private let buckets = Mutex<[String: Bucket]>([:])

    public init(_ logger: Logger, burst: Int = 10, windowSeconds: UInt64 = 10) {
        self.logger = logger
        self.burst = burst
        self.windowNanoseconds = windowSeconds * 1_000_000_000
    }

    /// Logs `message()` under `key` (e.g. "e1000.tx.bad-descriptor") unless that key is over its budget.
    public func warning(_ key: String, _ message: @autoclosure () -> String) {
        log(.warning, key, message())
    }

    public func debug(_ key: String, _ message: @autoclosure () -> String) {
        guard logger.logLevel <= .debug else { return }
        log(.debug, key, message())
    }

    private func log(_ level: Logger.Level, _ key: String, _ message: @autoclosure () -> String) {
        let now = MonotonicTime.nanoseconds()
        let (emit, suppressedBefore) = buckets.withLock { b -> (Bool, Int) in
            var bucket = b[key] ?? Bucket(windowStart: now, count: 0, suppressed: 0)
            var reported = 0
            if now &- bucket.windowStart > windowNanoseconds {
                reported = bucket.suppressed
                bucket = Bucket(windowStart: now, count: 0, suppressed: 0)
            }
            bucket.count += 1
            let emit = bucket.count <= burst
            if !emit { bucket.suppressed += 1 }
            b[key] = bucket
            return (emit, reported)
        }
        if suppressedBefore > 0 { logger.log(level: level, "\(key): \(suppressedBefore) similar messages suppressed") }
        if emit { logger.log(level: level, "\(key): \(message())") }
    }
}
