import VMMNet

/// The statistics registers (Intel 8254x SDM §13.7, 0x4000–0x40FF): all read-to-clear.
/// The 64-bit octet counters are a low/high pair; reading the high half clears both, so
/// a driver reading low then high (Linux's e1000_update_stats) gets a consistent value.
/// Counters stick at their maximum instead of wrapping.
struct E1000Statistics {
    // Offsets (§13.7): only those this model counts get names.
    static let mpc = 0x4010, prc64 = 0x405C, prc1522 = 0x4070
    static let gprc = 0x4074, bprc = 0x4078, mprc = 0x407C, gptc = 0x4080
    static let gorcl = 0x4088, gotcl = 0x4090
    static let rnbc = 0x40A0, ruc = 0x40A4, roc = 0x40AC
    static let torl = 0x40C0, totl = 0x40C8, tpr = 0x40D0, tpt = 0x40D4
    static let ptc64 = 0x40D8, mptc = 0x40F0, bptc = 0x40F4, tsctc = 0x40F8, tsctfc = 0x40FC
    /// Low halves of the 64-bit pairs.
    static let pairs: Set<Int> = [gorcl, gotcl, torl, totl]

    /// One counter per register of the block, stored inline: several are counted per
    /// frame, and an array's copy-on-write check on each was 9 % of e1000 TX in memory.
    private var counts = InlineArray<64, UInt32>(repeating: 0)

    mutating func clear() { counts = InlineArray(repeating: 0) }

    @inline(__always)
    private static func index(_ offset: Int) -> Int? {
        // `counts` holds the whole block, 0x4000–0x40FF (§13.7).
        guard offset >= Reg.statsStart, offset < Reg.statsEnd, (offset - Reg.statsStart) / 4 < 64 else { return nil }
        return (offset - Reg.statsStart) / 4
    }

    // Always inlined, as the offsets are constants at every call and the index check
    // folds away: several counters move per frame.
    @inline(__always)
    mutating func count(_ offset: Int, by n: UInt32 = 1) {
        guard let i = Self.index(offset) else { return }
        let (v, overflow) = counts[i].addingReportingOverflow(n)
        counts[i] = overflow ? .max : v
    }

    @inline(__always)
    mutating func countOctets(_ lowOffset: Int, _ n: Int) {
        guard let lo = Self.index(lowOffset), lo + 1 < counts.count, n > 0 else { return }
        let value = UInt64(counts[lo + 1]) << 32 | UInt64(counts[lo])
        let (sum, overflow) = value.addingReportingOverflow(UInt64(n))
        let v = overflow ? UInt64.max : sum
        counts[lo] = UInt32(truncatingIfNeeded: v)
        counts[lo + 1] = UInt32(truncatingIfNeeded: v >> 32)
    }

    /// Counts a frame of `length` bytes (FCS included) in the 64/127/255/511/1023/1522
    /// size buckets that start at `firstBucket` (PRC64 or PTC64); longer frames are in none.
    @inline(__always)
    mutating func countSize(_ firstBucket: Int, length: Int) {
        let sizeClass = FrameSizeClass(length: length)
        guard sizeClass != .over1522 else { return }
        count(firstBucket + 4 * sizeClass.rawValue)
    }

    /// A guest read: the value, then the counter (or the pair, for a high half) clears.
    mutating func read(_ offset: Int) -> UInt32 {
        guard let i = Self.index(offset) else { return 0 }
        let v = counts[i]
        if Self.pairs.contains(offset) { return v }
        counts[i] = 0
        if Self.pairs.contains(offset - 4) { counts[i - 1] = 0 }
        return v
    }

    /// Without clearing (tests, diagnostics).
    func peek(_ offset: Int) -> UInt32 { Self.index(offset).map { counts[$0] } ?? 0 }
}
