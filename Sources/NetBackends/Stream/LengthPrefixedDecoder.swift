/// Splits a byte stream into frames that each carry a 4-byte big-endian length prefix
/// (QEMU's `-netdev stream`/`socket` and passt). A length above `maxFrameSize` cannot be
/// delivered: its bytes are skipped so the stream stays in step, and the frame is counted.
/// Loop thread only.
final class LengthPrefixedDecoder {
    enum Item {
        case frame(UnsafeRawBufferPointer)
        case oversized
        case empty
        case needMore
    }

    let maxFrameSize: Int
    private let storage: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var skipping = 0

    init(maxFrameSize: Int) {
        self.maxFrameSize = maxFrameSize
        // Room for one whole frame plus a large read behind it.
        storage = .allocate(byteCount: 4 + maxFrameSize + 65_536, alignment: 16)
    }

    deinit { storage.deallocate() }

    func reset() { start = 0; end = 0; skipping = 0 }

    /// The next complete frame in the buffer. The view is valid until the next `readSpace()`.
    func next() -> Item {
        if skipping > 0 {
            let n = min(skipping, end - start)
            start += n
            skipping -= n
            if skipping > 0 { return .needMore }
        }
        guard end - start >= 4 else { return .needMore }
        let length = Int(storage[start]) << 24 | Int(storage[start + 1]) << 16 | Int(storage[start + 2]) << 8 | Int(storage[start + 3])
        if length == 0 {
            start += 4
            return .empty
        }
        if length > maxFrameSize {
            start += 4
            skipping = length
            return .oversized
        }
        guard end - start >= 4 + length else { return .needMore }
        let frame = UnsafeRawBufferPointer(rebasing: storage[(start + 4) ..< (start + 4 + length)])
        start += 4 + length
        return .frame(frame)
    }

    /// Where the next read goes (after moving unconsumed bytes to the front).
    func readSpace() -> UnsafeMutableRawBufferPointer {
        if start > 0 {
            if end > start, let base = storage.baseAddress { base.copyMemory(from: base + start, byteCount: end - start) }
            end -= start
            start = 0
        }
        return UnsafeMutableRawBufferPointer(rebasing: storage[end...])
    }

    func didRead(_ count: Int) { end = min(end + max(count, 0), storage.count) }
}
