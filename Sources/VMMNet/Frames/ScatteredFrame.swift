import VMMCore

/// A frame given as several host buffers (views of guest descriptors), read in order
/// without first copying it into one piece. A single contiguous buffer needs no array,
/// so wrapping one allocates nothing.
public struct ScatteredFrame {
    /// The pieces when there are several; empty when the frame is `single`.
    @usableFromInline let pieces: [UnsafeRawBufferPointer]
    @usableFromInline let single: UnsafeRawBufferPointer
    /// The sum of the pieces' lengths.
    public let length: Int

    /// Nil only when the lengths overflow `Int` (a hostile descriptor list).
    public init?(_ segments: [UnsafeRawBufferPointer]) {
        var total = 0
        for s in segments {
            let (sum, overflow) = total.addingReportingOverflow(s.count)
            if overflow { return nil }
            total = sum
        }
        pieces = segments
        single = UnsafeRawBufferPointer(start: nil, count: 0)
        length = total
    }

    public init(_ contiguous: UnsafeRawBufferPointer) {
        pieces = []
        single = contiguous
        length = contiguous.count
    }

    @inlinable var pieceCount: Int { pieces.isEmpty ? 1 : pieces.count }

    @inlinable func piece(_ index: Int) -> UnsafeRawBufferPointer { pieces.isEmpty ? single : pieces[index] }

    /// Copies `destination.count` bytes starting at `offset` of the frame; false (and
    /// nothing promised about `destination`) when they are not all there.
    @discardableResult
    public func copyBytes(from offset: Int, into destination: UnsafeMutableRawBufferPointer) -> Bool {
        var reader = Reader(self, at: offset)
        return reader.read(into: destination)
    }

    /// The Internet checksum accumulator over `[offset, offset + count)` of the frame,
    /// summed piece by piece (odd piece boundaries handled); nil when out of range.
    public func checksum(from offset: Int, count: Int) -> InternetChecksum? {
        guard offset >= 0, count >= 0, offset <= length, count <= length - offset else { return nil }
        var reader = Reader(self, at: offset)
        var sum = InternetChecksum()
        var remaining = count
        while remaining > 0, reader.index < pieceCount {
            let p = piece(reader.index)
            let n = min(p.count - reader.offset, remaining)
            sum.add(UnsafeRawBufferPointer(rebasing: p[reader.offset ..< reader.offset + n]))
            remaining -= n
            reader.index += 1; reader.offset = 0 // the rest of this piece is done or not wanted
        }
        return sum
    }

    /// Reads the frame sequentially, so segmentation walks each descriptor once.
    struct Reader {
        let frame: ScatteredFrame
        var index = 0
        /// Offset inside `frame.piece(index)`.
        var offset = 0

        init(_ frame: ScatteredFrame, at position: Int) {
            self.frame = frame
            skip(position)
        }

        mutating func skip(_ count: Int) {
            var remaining = max(count, 0)
            while remaining > 0, index < frame.pieceCount {
                let available = frame.piece(index).count - offset
                if remaining < available { offset += remaining; return }
                remaining -= available
                index += 1; offset = 0
            }
        }

        /// Fills `destination` from the current position; false when the frame ends first.
        mutating func read(into destination: UnsafeMutableRawBufferPointer) -> Bool {
            var done = 0
            while done < destination.count {
                guard index < frame.pieceCount else { return false }
                let piece = frame.piece(index)
                let n = min(piece.count - offset, destination.count - done)
                if n > 0, let src = piece.baseAddress, let dst = destination.baseAddress {
                    ByteCopy.copy(to: dst + done, from: src + offset, count: n)
                }
                done += n
                offset += n
                if offset >= piece.count { index += 1; offset = 0 }
            }
            return true
        }
    }
}
