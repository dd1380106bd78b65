#if canImport(Glibc)
import Glibc
#endif
import CMallocCounter

/// Monotonic nanoseconds (clock_gettime), the only clock the benchmarks use.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// One measured operation: the median over several runs, and the allocations per op
/// in the quietest run (growth of long-lived buffers in the first run is not per-frame).
struct Measurement {
    let name: String
    let nanosecondsPerOp: Double
    /// Bytes one op moves (a frame's length), for Gbit/s; 0 when not a data path.
    let bytesPerOp: Int
    let allocationsPerOp: Double
    /// Ops per op the caller counts differently (frames per TSO send), informational.
    var note: String = ""

    var opsPerSecond: Double { nanosecondsPerOp > 0 ? 1e9 / nanosecondsPerOp : 0 }
    var gigabitsPerSecond: Double { nanosecondsPerOp > 0 ? Double(bytesPerOp) * 8 / nanosecondsPerOp : 0 }
}

/// Runs `body(n)` (which must do `n` ops) until a run lasts long enough to time, then
/// `runs` timed runs; reports the median ns/op. `opsPerCall` lets a body that works in
/// batches (a ring's worth) be counted per frame.
struct Harness {
    var runs = 7
    var targetRunNanoseconds: UInt64 = 40_000_000

    func measure(_ name: String, bytes: Int = 0, note: String = "", _ body: (Int) -> Void) -> Measurement {
        var n = 1
        while true {
            let start = monotonicNanoseconds()
            body(n)
            let elapsed = monotonicNanoseconds() &- start
            if elapsed >= targetRunNanoseconds / 4 || n >= 1 << 30 {
                let scaled = Double(n) * Double(targetRunNanoseconds) / Double(max(elapsed, 1))
                n = max(1, Int(min(scaled, Double(1 << 30))))
                break
            }
            n *= 4
        }
        var perOp: [Double] = []
        var allocations: [Double] = []
        for _ in 0 ..< runs {
            let before = mallocCounterValue()
            let start = monotonicNanoseconds()
            body(n)
            let elapsed = monotonicNanoseconds() &- start
            let after = mallocCounterValue()
            perOp.append(Double(elapsed) / Double(n))
            allocations.append(Double(after &- before) / Double(n))
        }
        perOp.sort()
        return Measurement(name: name, nanosecondsPerOp: perOp[perOp.count / 2], bytesPerOp: bytes,
                           allocationsPerOp: allocations.min() ?? 0, note: note)
    }
}

/// Lines the driver script (Tools/bench/run) collects: `BENCH <key> <value>`, plus a
/// human-readable table on stdout.
enum Report {
    static func emit(_ m: Measurement, key: String) {
        print("BENCH \(key).ns \(format(m.nanosecondsPerOp))")
        print("BENCH \(key).allocs \(format(m.allocationsPerOp))")
        if m.bytesPerOp > 0 { print("BENCH \(key).gbps \(format(m.gigabitsPerSecond))") }
        print("BENCH \(key).ops \(format(m.opsPerSecond))")
    }

    static func value(_ key: String, _ v: Double) { print("BENCH \(key) \(format(v))") }

    static func format(_ v: Double) -> String {
        if v == 0 { return "0" }
        let magnitude = abs(v)
        let digits = magnitude >= 100 ? 0 : magnitude >= 1 ? 2 : 4
        var scale = 1.0
        for _ in 0 ..< digits { scale *= 10 }
        let rounded = (v * scale).rounded() / scale
        return digits == 0 ? String(Int(rounded)) : String(rounded)
    }
}
