/// Deterministic pseudo-random numbers (Marsaglia's xorshift64, shifts 13/7/17), so that a
/// test built on "random" data fails the same way every run.
public struct TestRandom: Sendable {
    /// The generator's whole state: never 0.
    public var state: UInt64

    /// Seed 0 would stay 0 forever; it is replaced by a fixed non-zero constant.
    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    /// The next value of the sequence.
    public mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }

    /// `n` bytes, the low byte of successive values.
    public mutating func bytes(_ n: Int) -> [UInt8] { (0 ..< n).map { _ in UInt8(truncatingIfNeeded: next()) } }

    /// A value in `0 ..< n`.
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
