/// What a fault filter does to frames, reproducibly: from a NIC's `fault-*` options or
/// QMP's `x-swiftvmm-set-faults` on a running guest.
public struct FaultConfig: Equatable, Sendable {
    public enum Direction: String, Sendable { case tx, rx, both }

    /// Percent of frames dropped / duplicated / with one byte flipped / sent after the
    /// frame that follows them (0...100).
    public var dropPercent = 0.0
    public var duplicatePercent = 0.0
    public var corruptPercent = 0.0
    public var reorderPercent = 0.0
    /// Extra latency for every frame, in nanoseconds.
    public var delay: UInt64 = 0
    /// Token-bucket rate limit in bits per second (0: none). Frames over it are dropped.
    public var rateBitsPerSecond: UInt64 = 0
    public var seed: UInt64 = 1
    public var direction = Direction.both

    public init() {}

    public var isActive: Bool {
        dropPercent > 0 || duplicatePercent > 0 || corruptPercent > 0 || reorderPercent > 0 || delay > 0 || rateBitsPerSecond > 0
    }
}
