/// A frame given as several host buffers (views of guest descriptors), read in order
/// without first copying it into one piece.
public struct ScatteredFrame {
    public let segments: [UnsafeRawBufferPointer]
    /// The sum of the segments' lengths.
    public let length: Int

    /// Nil only when the lengths overflow `Int` (a hostile descriptor list).
    public init?(_ segments: [UnsafeRawBufferPointer]) {
        var total = 0
        for s in segments {
            let (sum, overflow) = total.addingReportingOverflow(s.count)
            if overflow { return nil }
            total = sum
        }
        self.segments = segments
        self.length = total
    }

    public init(_ contiguous: UnsafeRawBufferPointer) {
        segments = [contiguous]
        length = contiguous.count
    }

    /// Copies `destination.count` bytes starting at `offset` of the frame; false (and
    /// nothing promised about `destination`) when they are not all there.
    @discardableResult
    public func copyBytes(from offset: Int, into destination: UnsafeMutableRawBufferPointer) -> Bool {
        var reader = Reader(self, at: offset)
        return reader.read(into: destination)
    }

    /// Reads the frame sequentially, so segmentation walks each descriptor once.
    struct Reader {
        let frame: ScatteredFrame
        var index = 0
        /// Offset inside `frame.segments[index]`.
        var offset = 0

        init(_ frame: ScatteredFrame, at position: Int) {
            self.frame = frame
            skip(position)
        }

        mutating func skip(_ count: Int) {
            var remaining = max(count, 0)
            while remaining > 0, index < frame.segments.count {
                let available = frame.segments[index].count - offset
                if remaining < available { offset += remaining; return }
                remaining -= available
                index += 1; offset = 0
            }
        }

        /// Fills `destination` from the current position; false when the frame ends first.
        mutating func read(into destination: UnsafeMutableRawBufferPointer) -> Bool {
            var done = 0
            while done < destination.count {
                guard index < frame.segments.count else { return false }
                let segment = frame.segments[index]
                let n = min(segment.count - offset, destination.count - done)
                if n > 0, let src = segment.baseAddress, let dst = destination.baseAddress {
                    (dst + done).copyMemory(from: src + offset, byteCount: n)
                }
                done += n
                offset += n
                if offset >= segment.count { index += 1; offset = 0 }
            }
            return true
        }
    }
}
