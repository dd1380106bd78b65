import VMMCore

/// A driver-side view of one split virtqueue in guest memory, as Linux's virtio_ring builds it.
public final class SplitDriverQueue {
    public let index: Int
    public let size: UInt16
    public let desc: GuestAddress, avail: GuestAddress, used: GuestAddress
    public let memory: GuestMemory
    public private(set) var availIdx: UInt16 = 0
    public private(set) var lastUsed: UInt16 = 0
    public private(set) var nextDesc: UInt16 = 0

    public init(index: Int, size: UInt16, machine: TestMachine) {
        self.index = index
        self.size = size
        memory = machine.memory
        desc = machine.allocator.alloc(size: 16 * UInt64(size), align: 4096)
        avail = machine.allocator.alloc(size: 6 + 2 * UInt64(size), align: 2)
        used = machine.allocator.alloc(size: 6 + 8 * UInt64(size), align: 4096)
    }

    public func writeDescriptor(_ i: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16, table: GuestAddress? = nil) {
        let base = (table ?? desc).raw + 16 * UInt64(i)
        try? memory.store(address, at: GuestAddress(base))
        try? memory.store(length, at: GuestAddress(base + 8))
        try? memory.store(flags, at: GuestAddress(base + 12))
        try? memory.store(next, at: GuestAddress(base + 14))
    }

    /// Writes a chain of descriptors (readable first, then writable) and returns its head.
    @discardableResult
    public func addChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], publish: Bool = true) -> UInt16 {
        let head = nextDesc
        for (n, b) in buffers.enumerated() {
            let i = (head &+ UInt16(n)) % size
            let last = n == buffers.count - 1
            writeDescriptor(i, address: b.address.raw, length: b.length,
                            flags: (last ? 0 : 1) | (b.writable ? 2 : 0), next: (i &+ 1) % size)
        }
        nextDesc = (head &+ UInt16(buffers.count)) % size
        if publish { self.publish(head) }
        return head
    }

    /// One descriptor pointing at an indirect table holding `buffers` (§2.7.5.3).
    @discardableResult
    public func addIndirect(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], allocator: GuestAllocator) -> UInt16 {
        let table = allocator.alloc(size: 16 * UInt64(buffers.count), align: 16)
        for (n, b) in buffers.enumerated() {
            let last = n == buffers.count - 1
            writeDescriptor(UInt16(n), address: b.address.raw, length: b.length,
                            flags: (last ? 0 : 1) | (b.writable ? 2 : 0), next: UInt16(n + 1), table: table)
        }
        let head = nextDesc
        writeDescriptor(head, address: table.raw, length: UInt32(16 * buffers.count), flags: 4, next: 0)
        nextDesc = (head &+ 1) % size
        publish(head)
        return head
    }

    /// Puts `head` in the avail ring and moves avail->idx.
    public func publish(_ head: UInt16) {
        try? memory.store(head, at: GuestAddress(avail.raw + 4 + 2 * UInt64(availIdx % size)))
        availIdx &+= 1
        try? memory.store(availIdx, at: GuestAddress(avail.raw + 2))
    }

    public func setAvailIndex(_ v: UInt16) {
        availIdx = v
        try? memory.store(v, at: GuestAddress(avail.raw + 2))
    }

    public var usedIndex: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw + 2))) ?? 0 }
    public var usedFlags: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw))) ?? 0 }
    /// avail_event, after the used ring (§2.7.10).
    public var availEvent: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw + 4 + 8 * UInt64(size)))) ?? 0 }

    /// used_event, after the avail ring.
    public func setUsedEvent(_ v: UInt16) { try? memory.store(v, at: GuestAddress(avail.raw + 4 + 2 * UInt64(size))) }
    public func setAvailFlags(_ v: UInt16) { try? memory.store(v, at: GuestAddress(avail.raw)) }

    /// Used elements published since the last call.
    public func takeUsed() -> [(id: UInt32, length: UInt32)] {
        var out: [(UInt32, UInt32)] = []
        let now = usedIndex
        while lastUsed != now {
            let base = used.raw + 4 + 8 * UInt64(lastUsed % size)
            let id = (try? memory.load(UInt32.self, at: GuestAddress(base))) ?? .max
            let len = (try? memory.load(UInt32.self, at: GuestAddress(base + 4))) ?? .max
            out.append((id, len))
            lastUsed &+= 1
        }
        return out
    }
}
