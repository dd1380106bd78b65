/// The one copy routine for frame- and block-sized copies between guest memory and host
/// buffers.
///
/// glibc's `memcpy` switches to `rep movsb` above a few KiB. On the CPUs these machines
/// run on, a forward copy whose destination lies 1–63 bytes after its source modulo
/// 4 KiB is many times slower ("4K aliasing": each store's low 12 address bits match a
/// load still to come, so the load waits for the store). Measured here with a C loop
/// (Docs/performance.md, "4K aliasing"): 64 KiB in 1.3 µs at distance 0 or ≥ 64, 22 µs
/// at distance 2–30; 9014 B in 0.1 µs against 3 µs; 1514 B in 19 ns against 86 ns.
/// Guests choose their buffer addresses and our scratch buffers sit at malloc's 16-byte
/// offset, so the slow case is common (e1000 TSO sends hit it on every packet).
///
/// Copying that case backwards, in 64-byte blocks from the end, never loads from an
/// address a pending store aliases: 64 KiB in 1.3 µs, 1514 B in 29 ns at any distance.
public enum ByteCopy {
    /// Copies `count` bytes; the two ranges must not overlap.
    @inlinable
    public static func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) {
        guard count > 0 else { return }
        let distance = (UInt(bitPattern: Int(bitPattern: destination)) &- UInt(bitPattern: Int(bitPattern: source))) & 4095
        guard count >= 256, distance != 0, distance < 64 else {
            destination.copyMemory(from: source, byteCount: count)
            return
        }
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
