import VMMCore

/// A driver-side packed virtqueue (virtio 1.2 §2.8) as Linux's virtqueue_add_packed /
/// virtqueue_get_buf_ctx_packed drive it: wrap counters, AVAIL/USED flag bits, the first
/// descriptor's flags written last, one buffer ID per chain.
public final class PackedDriverQueue {
    public static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4
    public static let avail: UInt16 = 1 << 7, used: UInt16 = 1 << 15

    public let index: Int
    public let size: UInt16
    public let ring: GuestAddress, driverEvent: GuestAddress, deviceEvent: GuestAddress
    public let memory: GuestMemory
    public private(set) var nextAvail: UInt16 = 0, availWrap = true
    public private(set) var nextUsed: UInt16 = 0, usedWrap = true
    public private(set) var nextID: UInt16 = 0
    private var slotsOf: [UInt16: UInt16] = [:]

    public init(index: Int, size: UInt16, machine: TestMachine) {
        self.index = index
        self.size = size
        memory = machine.memory
        ring = machine.allocator.alloc(size: 16 * UInt64(size), align: 16)
        driverEvent = machine.allocator.alloc(size: 4, align: 4)
        deviceEvent = machine.allocator.alloc(size: 4, align: 4)
    }

    private func store<T: FixedWidthInteger>(_ v: T, _ a: UInt64) { try? memory.store(v, at: GuestAddress(a)) }
    private func load<T: FixedWidthInteger>(_ t: T.Type, _ a: UInt64) -> T { (try? memory.load(t, at: GuestAddress(a))) ?? 0 }

    private func availFlags(_ wrap: Bool) -> UInt16 { wrap ? PackedDriverQueue.avail : PackedDriverQueue.used }

    /// Writes one raw descriptor at `slot` (flags as given; the wrap bits are added).
    public func writeDescriptor(_ slot: UInt16, address: UInt64, length: UInt32, id: UInt16, flags: UInt16, wrap: Bool) {
        let base = ring.raw + 16 * UInt64(slot)
        store(address, base); store(length, base + 8); store(id, base + 12)
        store(flags | availFlags(wrap), base + 14)
    }

    /// Makes a chain available; returns its buffer ID.
    @discardableResult
    public func addChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)]) -> UInt16 {
        let id = nextID
        nextID &+= 1
        let firstSlot = nextAvail
        var firstFlags: UInt16 = 0
        for (n, b) in buffers.enumerated() {
            let flags = (n == buffers.count - 1 ? 0 : PackedDriverQueue.next) | (b.writable ? PackedDriverQueue.write : 0)
            let base = ring.raw + 16 * UInt64(nextAvail)
            store(b.address.raw, base); store(b.length, base + 8); store(id, base + 12)
            if n == 0 { firstFlags = flags | availFlags(availWrap) } else { store(flags | availFlags(availWrap), base + 14) }
            advance(&nextAvail, &availWrap)
        }
        slotsOf[id] = UInt16(buffers.count)
        store(firstFlags, ring.raw + 16 * UInt64(firstSlot) + 14) // last: publishes the chain
        return id
    }

    @discardableResult
    public func addIndirect(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], allocator: GuestAllocator) -> UInt16 {
        let table = allocator.alloc(size: 16 * UInt64(buffers.count), align: 16)
        for (n, b) in buffers.enumerated() {
            let base = table.raw + 16 * UInt64(n)
            store(b.address.raw, base); store(b.length, base + 8)
            store(b.writable ? PackedDriverQueue.write : 0, base + 14)
        }
        let id = nextID
        nextID &+= 1
        writeDescriptor(nextAvail, address: table.raw, length: UInt32(16 * buffers.count), id: id,
                        flags: PackedDriverQueue.indirect, wrap: availWrap)
        advance(&nextAvail, &availWrap)
        slotsOf[id] = 1
        return id
    }

    func advance(_ p: inout UInt16, _ wrap: inout Bool) {
        p += 1
        if p == size { p = 0; wrap.toggle() }
    }

    /// Used descriptors the device wrote since the last call.
    public func takeUsed() -> [(id: UInt16, length: UInt32)] {
        var out: [(UInt16, UInt32)] = []
        while true {
            let base = ring.raw + 16 * UInt64(nextUsed)
            let flags = load(UInt16.self, base + 14)
            let isUsed = (flags & PackedDriverQueue.avail != 0) == usedWrap && (flags & PackedDriverQueue.used != 0) == usedWrap
            guard isUsed else { break }
            let id = load(UInt16.self, base + 12)
            out.append((id, load(UInt32.self, base + 8)))
            for _ in 0 ..< (slotsOf[id] ?? 1) { advance(&nextUsed, &usedWrap) }
        }
        return out
    }

    /// Driver event suppression: 0 enable, 1 disable, 2 at `offWrap`.
    public func setDriverEvent(flags: UInt16, offWrap: UInt16 = 0) {
        store(offWrap, driverEvent.raw)
        store(flags, driverEvent.raw + 2)
    }

    public var deviceEventFlags: UInt16 { load(UInt16.self, deviceEvent.raw + 2) }
    public var deviceEventOffWrap: UInt16 { load(UInt16.self, deviceEvent.raw) }
}
