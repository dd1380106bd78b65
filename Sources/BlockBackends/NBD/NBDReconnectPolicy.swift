#if canImport(Glibc)
import Glibc
#endif

/// How long the NBD backend waits for a lost server, and how often it knocks.
/// Attempts: 100 ms after the loss, then doubling to at most every 2 s, each handshake
/// given at most 5 s. Requests wait (in the bounded queue) until `timeout` seconds after
/// the loss, then fail with EIO-class errors; attempts go on at the 2 s pace, and the
/// first success makes the disk usable again.
struct NBDReconnectPolicy: Sendable {
    static let initialDelay = 0.1
    static let maximumDelay = 2.0
    static let handshakeTimeout = 5.0

    /// Seconds after the loss before queued requests fail (`reconnect-timeout=`).
    let timeout: Double
    private(set) var delay = NBDReconnectPolicy.initialDelay

    init(timeout: Double) { self.timeout = timeout.isFinite ? max(0, timeout) : DiskBackendConfig.defaultReconnectTimeout }

    /// The delay before the next attempt, doubling up to the maximum.
    mutating func nextDelay() -> Double {
        let d = delay
        delay = min(delay * 2, NBDReconnectPolicy.maximumDelay)
        return d
    }

    mutating func reset() { delay = NBDReconnectPolicy.initialDelay }

    /// Seconds as nanoseconds, clamped to 0...1e6 s (never a trapping conversion).
    static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds.isFinite else { return 1_000_000 * 1_000_000_000 }
        return UInt64(min(max(0, seconds), 1e6) * 1e9)
    }
}

/// errnos with which libnbd fails the commands of a connection that died (as opposed to
/// an error the server replied with): such commands are retried after a reconnect.
enum NBDConnectionLoss {
    static func contains(_ e: Int32) -> Bool {
        e == ENOTCONN || e == ESHUTDOWN || e == ECONNRESET || e == EPIPE || e == ECONNABORTED || e == ECONNREFUSED || e == EBADF
    }
}
