import Synchronization
import VMMCore

/// Hands out guest-physical buffers for rings and packets the way a driver's DMA
/// allocator would: a bump allocator over a RAM range, aligned, zeroed.
public final class GuestAllocator: Sendable {
    private let memory: GuestMemory
    private let next: Mutex<UInt64>
    public let limit: UInt64

    public init(memory: GuestMemory, start: UInt64 = 0x10_0000, limit: UInt64? = nil) {
        self.memory = memory
        self.next = Mutex(start)
        self.limit = limit ?? memory.regions.first.map { $0.base.raw + $0.size } ?? start
    }

    /// A zeroed buffer of `size` bytes aligned to `align` (a power of two).
    public func alloc(size: UInt64, align: UInt64 = 16) -> GuestAddress {
        let base = next.withLock { n -> UInt64 in
            let a = (n + align - 1) & ~(align - 1)
            n = a + size
            return a
        }
        precondition(base + size <= limit, "test guest memory exhausted") // test-only: the test chose the sizes
        try? memory.fill(GuestAddress(base), length: size, with: 0)
        return GuestAddress(base)
    }
}
