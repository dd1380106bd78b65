/// Payload bytes for test frames: reproducible, and different at every offset so that a
/// dropped, duplicated or reordered byte shows up in a comparison.
public enum Payload {
    /// `n` bytes `i * 7 + seed` (mod 256): 7 is odd, so the pattern repeats only every 256 bytes.
    public static func counting(_ n: Int, seed: Int = 0) -> [UInt8] { (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }

    /// `n` pseudo-random bytes from `TestRandom(seed:)`.
    public static func random(_ n: Int, seed: UInt64 = 7) -> [UInt8] {
        var r = TestRandom(seed: seed)
        return r.bytes(n)
    }
}
