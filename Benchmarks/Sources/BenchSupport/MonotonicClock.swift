#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds (clock_gettime), the clock the real-backend runs, the soak and
/// the drivers' own timings use.
package func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
