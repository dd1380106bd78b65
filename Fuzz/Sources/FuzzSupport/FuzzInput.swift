/// Reads typed choices off the front of a fuzzer's input. Running out of bytes yields
/// zeros, so every input, however short, decodes to some sequence of operations and
/// libFuzzer's mutations of a byte change one choice rather than the whole framing.
public struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private var cursor = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    }

    public init(_ buffer: UnsafeRawBufferPointer) { bytes = buffer }

    public var isExhausted: Bool { cursor >= bytes.count }
    public var remaining: Int { max(bytes.count - cursor, 0) }

    public mutating func byte() -> UInt8 {
        guard cursor < bytes.count else { return 0 }
        defer { cursor += 1 }
        return bytes[cursor]
    }

    public mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self) -> T {
        var v: T = 0
        for i in 0 ..< MemoryLayout<T>.size { v |= T(byte()) << (8 * i) }
        return v
    }

    public mutating func bool() -> Bool { byte() & 1 == 1 }

    /// A value in `0 ..< count` (count > 0), from one byte (two when count > 256).
    public mutating func choose(_ count: Int) -> Int {
        guard count > 1 else { return 0 }
        let raw = count > 256 ? Int(integer(UInt16.self)) : Int(byte())
        return raw % count
    }

    /// One of the access sizes a CPU makes: 1, 2, 4 or 8 bytes.
    public mutating func accessSize() -> Int { [1, 2, 4, 8][Int(byte() & 3)] }

    /// Up to `limit` raw bytes.
    public mutating func bytes(upTo limit: Int) -> [UInt8] {
        let n = min(Int(byte()) % (limit + 1), remaining)
        var out: [UInt8] = []
        out.reserveCapacity(n)
        for _ in 0 ..< n { out.append(byte()) }
        return out
    }

    /// Everything not consumed yet.
    public mutating func rest() -> [UInt8] {
        var out: [UInt8] = []
        while !isExhausted { out.append(byte()) }
        return out
    }

    /// A guest address biased toward interesting places: near zero, near `anchors`
    /// (region ends, BAR bases), near 2^64, or anything at all.
    public mutating func address(near anchors: [UInt64]) -> UInt64 {
        let delta = Int64(Int16(bitPattern: integer(UInt16.self)))
        func around(_ base: UInt64) -> UInt64 {
            delta < 0 ? base &- UInt64(-delta) : base &+ UInt64(delta)
        }
        switch byte() % 4 {
        case 0: return around(0)
        case 1 where !anchors.isEmpty: return around(anchors[choose(anchors.count)])
        case 2: return around(0) &- 0x1_0000 // just below 2^64
        default: return integer(UInt64.self)
        }
    }
}
