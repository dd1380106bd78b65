/// QEMU's virtio-rng rate limit (`quota_remaining`, `check_rate_limit`): a budget of
/// bytes that is refilled whole at the end of each period, the period starting when the
/// first byte of it is taken. Without a limit every request is served in full.
struct EntropyQuota {
    let maxBytes: UInt64?
    let periodNanoseconds: UInt64
    private(set) var remaining: UInt64
    /// When the current period ends (device-clock ns); nil until a byte is taken.
    private(set) var periodEnd: UInt64?

    init(maxBytes: UInt64?, periodMilliseconds: UInt32) {
        self.maxBytes = maxBytes
        periodNanoseconds = UInt64(periodMilliseconds) * 1_000_000
        remaining = maxBytes ?? .max
    }

    /// How many of `wanted` bytes may go now (at `now`).
    mutating func grant(_ wanted: UInt64, now: UInt64) -> UInt64 {
        guard maxBytes != nil else { return wanted }
        if let end = periodEnd, now >= end { refill() }
        let granted = min(wanted, remaining)
        if granted > 0, periodEnd == nil {
            let (end, overflow) = now.addingReportingOverflow(periodNanoseconds)
            periodEnd = overflow ? .max : end
        }
        remaining -= granted
        return granted
    }

    /// Bytes granted and not used go back (a request that took fewer, or none came).
    mutating func giveBack(_ bytes: UInt64) {
        guard let max = maxBytes else { return }
        let (sum, overflow) = remaining.addingReportingOverflow(bytes)
        remaining = overflow ? max : min(max, sum)
    }

    var isSpent: Bool { maxBytes != nil && remaining == 0 }

    /// A new period: the whole budget again.
    mutating func refill() {
        remaining = maxBytes ?? .max
        periodEnd = nil
    }
}
