/// QEMU's virtio-rng rate limit (`quota_remaining`, `check_rate_limit`): a budget of
/// bytes that is refilled whole at the end of each period, the period starting when the
/// first byte of it is given. Without a limit every request is served in full.
struct EntropyQuota {
    let maxBytes: UInt64?
    let periodNanoseconds: UInt64
    private(set) var remaining: UInt64
    /// When the current period ends (device-clock ns); nil until a byte of it is given.
    private(set) var periodEnd: UInt64?

    init(maxBytes: UInt64?, periodMilliseconds: UInt32) {
        self.maxBytes = maxBytes
        periodNanoseconds = UInt64(periodMilliseconds) * 1_000_000
        remaining = maxBytes ?? .max
    }

    /// How many of `wanted` bytes may go now (at `now`). A period that has ended gives the
    /// whole budget again, here and only here: the refill timer only runs the queue, so a
    /// kick that came first and the timer do not refill twice.
    mutating func available(_ wanted: UInt64, now: UInt64) -> UInt64 {
        guard let maxBytes else { return wanted }
        if let end = periodEnd, now >= end {
            remaining = maxBytes
            periodEnd = nil
        }
        return min(wanted, remaining)
    }

    /// `bytes` were given (at most what `available` allowed); the first of a period starts it.
    mutating func spend(_ bytes: UInt64, now: UInt64) {
        guard maxBytes != nil, bytes > 0 else { return }
        remaining -= min(remaining, bytes)
        if periodEnd == nil {
            let (end, overflow) = now.addingReportingOverflow(periodNanoseconds)
            periodEnd = overflow ? .max : end
        }
    }
}
