/// Sizes of a request's scatter list, with overflow checked: the buffers come from the
/// device (guest memory), which checked them, but a backend never traps on a sum.
enum ScatterList {
    /// The number of bytes in `segments`, or nil if the sum overflows.
    static func totalLength(_ counts: some Sequence<Int>) -> Int? {
        var total = 0
        for c in counts {
            guard c >= 0 else { return nil }
            let (sum, overflow) = total.addingReportingOverflow(c)
            if overflow { return nil }
            total = sum
        }
        return total
    }

    /// `offset + length` as a byte range end, or nil if it does not fit in 63 bits
    /// (off_t is signed: the kernel refuses anything larger anyway).
    static func end(offset: UInt64, length: Int) -> UInt64? {
        guard length >= 0, offset <= UInt64(Int64.max) else { return nil }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        guard !overflow, end <= UInt64(Int64.max) else { return nil }
        return end
    }
}
