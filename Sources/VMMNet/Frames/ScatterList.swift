import VMMCore

/// A frame as host views of guest buffers (what `NetworkBackend.send` gets).
public enum ScatterList {
    /// The number of bytes in a scatter list, or nil if the sum overflows.
    public static func totalLength(_ segments: [UnsafeRawBufferPointer]) -> Int? {
        var total = 0
        for s in segments {
            let (sum, overflow) = total.addingReportingOverflow(s.count)
            if overflow { return nil }
            total = sum
        }
        return total
    }

    /// Copies a scatter list into `out`, as much as fits (the front of a frame, when `out`
    /// is smaller); returns the bytes written.
    @discardableResult
    public static func gather(_ segments: [UnsafeRawBufferPointer], into out: UnsafeMutableRawBufferPointer) -> Int {
        var offset = 0
        for s in segments where s.count > 0 {
            guard let base = s.baseAddress, let dst = out.baseAddress, offset < out.count else { break }
            let n = min(s.count, out.count - offset)
            ByteCopy.copy(to: dst + offset, from: base, count: n)
            offset += n
        }
        return offset
    }
}
