import VMMCore

/// Keeps a `block_resize` and the writes of a file disk apart. A write checks its range
/// against the disk's size and then writes; a shrink between the two would be undone, the
/// file growing back past the end the guest was told (a write past EOF extends a file).
/// Writes pass the gate together; a resize closes it, waits for the writes already
/// inside, changes the size, and opens it again, as QEMU drains a disk before it
/// truncates one (`bdrv_drained_begin` in `qmp_block_resize`). A closed gate holds new
/// writes back, so a steady stream of them cannot starve the resize.
final class ResizeGate: @unchecked Sendable {
    private let condition = ThreadCondition()
    private var writesInside = 0
    private var resizing = false

    /// Runs a write-like request's check and I/O inside the gate.
    func write<R>(_ body: () -> R) -> R {
        condition.withLock {
            _ = condition.wait { !resizing }
            writesInside += 1
        }
        defer {
            condition.withLock {
                writesInside -= 1
                if writesInside == 0 { condition.broadcast() }
            }
        }
        return body()
    }

    /// Runs a size change once no write is inside, with new ones held back meanwhile; nil
    /// when the writes inside did not finish within `seconds`. The caller is the QMP
    /// thread: a write hung on a dead NFS server or FUSE image must not take the control
    /// socket (and `quit`) with it.
    func resize<R, E: Error>(waitingAtMost seconds: Double, _ body: () throws(E) -> R) throws(E) -> R? {
        let deadline = MonotonicDeadline(secondsFromNow: seconds)
        let drained = condition.withLock { () -> Bool in
            guard condition.wait(until: deadline, { !resizing }) else { return false }
            resizing = true
            guard condition.wait(until: deadline, { writesInside == 0 }) else {
                resizing = false
                condition.broadcast()
                return false
            }
            return true
        }
        guard drained else { return nil }
        defer {
            condition.withLock {
                resizing = false
                condition.broadcast()
            }
        }
        return try body()
    }
}
