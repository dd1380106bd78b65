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

    /// The elements, leaving this array empty (and without storage): no copy and no
    /// allocation. A device's pass moves its scratch arrays into locals this way and puts
    /// them back when it ends; used in place through `self`, a class property is retained
    /// and released around every call it is passed to.
    @inlinable
    public mutating func take() -> Array {
        var out: Array = []
        swap(&out, &self)
        return out
    }
}
