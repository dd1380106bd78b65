import CLinux

/// The one copy routine for frame- and block-sized copies between guest memory and host
/// buffers.
///
/// glibc's `memcpy` switches to `rep movsb` above a few KiB. On CPUs without FSRM (Fast
/// Short REP MOV), a forward copy whose destination lies 1–63 bytes after its source
/// modulo 4 KiB is many times slower there ("4K aliasing": each store's low 12 address
/// bits match a load still to come, so the load waits for the store). Measured on such a
/// machine with a C loop (Docs/performance.md, "4K aliasing"): 64 KiB in 1.3 µs at
/// distance 0 or ≥ 64, 22 µs at distance 2–30; 9014 B in 0.1 µs against 3 µs; 1514 B
/// in 19 ns against 86 ns. Guests choose their buffer addresses and our scratch buffers
/// sit at malloc's 16-byte offset, so the slow case is common (e1000 TSO sends hit it
/// on every packet). There, copying that case backwards, in 64-byte blocks from the
/// end, never loads from an address a pending store aliases: 64 KiB in 1.3 µs, 1514 B
/// in 29 ns at any distance.
///
/// Where the CPU has FSRM, glibc avoids the short-distance `rep movsb` itself
/// (cpu_features.c sets Avoid_Short_Distance_REP_MOVSB), and its copy is the faster
/// one at every distance: on the Xeon these benchmarks ran on, at distance 12, 1514 B
/// in 12 ns against 32 ns backwards, 9014 B in 69 against 212 ns, 64 KiB in 1.7 against
/// 4.0 µs. The backward path is then not taken.
public enum ByteCopy {
    /// Copies `count` bytes; the two ranges must not overlap.
    @inlinable
    public static func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) {
        guard count > 0 else { return }
        let distance = (UInt(bitPattern: Int(bitPattern: destination)) &- UInt(bitPattern: Int(bitPattern: source))) & 4095
        guard count >= 256, distance != 0, distance < 64, shortDistanceIsSlow else {
            destination.copyMemory(from: source, byteCount: count)
            return
        }
        copyBackward(to: destination, from: source, count: count)
    }

    /// Whether glibc's forward copy is slow between buffers a short distance apart: on
    /// CPUs without FSRM. Read once.
    @usableFromInline static let shortDistanceIsSlow = clinux_cpu_has_fsrm() == 0

    /// The copy in 64-byte blocks from the end (the tail first).
    @inlinable
    static func copyBackward(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) {
        var at = count & ~63
        if at < count { (destination + at).copyMemory(from: source + at, byteCount: count - at) }
        while at > 0 {
            at -= 64
            (destination + at).copyMemory(from: source + at, byteCount: 64)
        }
    }

    /// Copies `source` to the start of `destination`, as much as fits (callers pass
    /// buffers of equal size); returns the bytes copied. Never traps on a size mismatch.
    @inlinable @discardableResult
    public static func copy(to destination: UnsafeMutableRawBufferPointer, from source: UnsafeRawBufferPointer) -> Int {
        let count = min(source.count, destination.count)
        guard let d = destination.baseAddress, let s = source.baseAddress else { return 0 }
        copy(to: d, from: s, count: count)
        return count
    }
}
