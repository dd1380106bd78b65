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

    /// Runs a size change once no write is inside, with new ones held back meanwhile.
    func resize<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        condition.withLock {
            _ = condition.wait { !resizing }
            resizing = true
            _ = condition.wait { writesInside == 0 }
        }
        defer {
            condition.withLock {
                resizing = false
                condition.broadcast()
            }
        }
        return try body()
    }
}
