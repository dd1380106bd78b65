import Synchronization
import VMMCore

/// A split virtqueue (virtio 1.2 §2.7) seen from the device: the descriptor table, the
/// driver ("available") ring and the device ("used") ring in guest RAM.
///
/// Built when the driver enables the queue: the size must be a power of two ≤ the
/// maximum, each part aligned as §2.7 requires and wholly inside one RAM region; the
/// device then keeps host views of them, taken again when guest memory is remapped
/// (`RingReachability`). Everything read from them
/// afterwards — indices, heads, `next` links, indirect tables — is checked again on every
/// use, since the guest can rewrite the rings at any time.
///
/// Not thread-safe by itself: the owning device's lock serializes all calls.
public final class SplitVirtqueue: Virtqueue, @unchecked Sendable {
    /// An indirect table holds no more than a chain may have.
    public static let maxIndirectEntries = UInt32(maxChainDescriptors)
    /// The most descriptors one chain may have, an indirect table's entries included:
    /// 1,024, QEMU's VIRTQUEUE_MAX_SIZE (virtqueue_pop refuses more), the largest queue
    /// and indirect table this project offers. Not the queue's own size, which the spec
    /// names (§2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the Queue
    /// Size of the device"): Linux's virtqueue_add_split and _packed only keep to it
    /// without indirect descriptors, so with `queue-size=16` a virtio_net send of
    /// MAX_SKB_FRAGS + 2 descriptors, or a virtio_blk request after the driver shrank its
    /// ring, would have been refused and the device reset.
    public static let maxChainDescriptors = 1024

    public let index: Int
    public let size: UInt16
    public private(set) var isEnabled = true
    private let memory: GuestMemory
    private let features: VirtqueueConfiguration.RingFeatures

    /// The next avail ring slot the device will read.
    public private(set) var lastAvailIndex: UInt16 = 0
    /// `avail->idx` as last read (and checked): the chains before it are known to be there
    /// without reading it again, as vhost keeps `vq->avail_idx`. A burst of chains costs
    /// one read of the index and one acquire fence, not one per chain.
    private var seenAvailIndex: UInt16 = 0
    /// `used->idx` as last published.
    public private(set) var usedIndex: UInt16 = 0
    /// Used entries written but not yet published by `publishUsed()`.
    public private(set) var pendingUsed: UInt16 = 0
    /// `used->idx` when the driver was last notified (EVENT_IDX, §2.7.10); nil forces one.
    private var signalledUsed: UInt16?

    private let configuration: VirtqueueConfiguration
    private var descriptors: UnsafeMutableRawBufferPointer
    private var avail: VirtqAvailRing
    private var used: VirtqUsedRing
    private var reachability: RingReachability
    /// `queue_enable = 1`: validates and maps the rings (§2.7: desc 16-, avail 2-, used 4-byte aligned).
    init(index: Int, configuration c: VirtqueueConfiguration, features: VirtqueueConfiguration.RingFeatures,
         memory: GuestMemory) throws(VirtqueueError) {
        guard c.size != 0, c.size <= c.maxSize, c.size.nonzeroBitCount == 1 else { throw .badQueueSize(c.size) }
        self.index = index
        self.size = c.size
        self.memory = memory
        self.features = features
        configuration = c
        reachability = RingReachability(memory: memory)
        (descriptors, avail, used) = try Self.mapRings(c, memory: memory)
    }

    private static func mapRings(_ c: VirtqueueConfiguration, memory: GuestMemory) throws(VirtqueueError)
        -> (UnsafeMutableRawBufferPointer, VirtqAvailRing, VirtqUsedRing) {
        let descriptors = try memory.mapRing("descriptor table", c.descriptorArea,
                                             length: UInt64(VirtqDescriptor.size) * UInt64(c.size), align: 16)
        let avail = VirtqAvailRing(memory: try memory.mapRing("driver area", c.driverArea, length: VirtqAvailRing.length(size: c.size), align: 2),
                                   size: c.size)
        let used = VirtqUsedRing(memory: try memory.mapRing("device area", c.deviceArea, length: VirtqUsedRing.length(size: c.size), align: 4),
                                 size: c.size)
        return (descriptors, avail, used)
    }

    /// Whether the rings can be touched now (`RingReachability`); maps them again first
    /// when guest memory was remapped since.
    private func ringsReachable() -> Bool {
        reachability.check(memory) { () throws(VirtqueueError) in
            (descriptors, avail, used) = try Self.mapRings(configuration, memory: memory)
        }
    }

    /// Stops using the rings after an error, until the driver resets the device.
    func disable() { isEnabled = false }

    private var mask: UInt16 { size &- 1 }

    // MARK: Taking chains

    /// Chains the driver made available that the device has not taken. Throws when the
    /// index ran ahead by more than the queue size (§2.7.13.3: impossible for a sane driver).
    public func availableCount() throws(VirtqueueError) -> UInt16 {
        guard isEnabled, ringsReachable() else { return 0 }
        return try pending(avail.index)
    }

    private func pending(_ now: UInt16) throws(VirtqueueError) -> UInt16 {
        let pending = now &- lastAvailIndex
        guard pending <= size else {
            throw .availIndexJump(lastSeen: lastAvailIndex, now: now, size: size, used: usedIndex &+ pendingUsed)
        }
        return pending
    }

    /// Takes the next available chain into `chain`; false when there is none.
    public func pop(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool {
        guard try nextAvailable() else { return false }
        try walk(head: avail.head(at: lastAvailIndex & mask), into: &chain)
        lastAvailIndex &+= 1
        return true
    }

    /// The next chain when it is one device-writable descriptor, taken; nil, and nothing
    /// taken, when there is none or it has another shape (`Virtqueue.popWritableBuffer`).
    public func popWritableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        try popSingleBuffer(flags: .write)
    }

    /// The next chain when it is one device-readable descriptor (`Virtqueue.popReadableBuffer`).
    public func popReadableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        try popSingleBuffer(flags: [])
    }

    /// The next chain when its head descriptor's flags are exactly `flags` (WRITE or
    /// nothing: no NEXT, no INDIRECT), taken.
    @inline(__always)
    private func popSingleBuffer(flags: VirtqDescriptorFlags) throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        guard try nextAvailable() else { return nil }
        let head = avail.head(at: lastAvailIndex & mask)
        guard head < size else { throw .headOutOfRange(head) }
        let d = VirtqDescriptor.load(descriptors, index: Int(head))
        // Another shape (NEXT, INDIRECT, the other direction): `pop(into:)` walks it, with
        // its checks.
        guard d.flags == flags else { return nil }
        lastAvailIndex &+= 1
        return (head, GuestBuffer(address: GuestAddress(d.address), length: d.length))
    }

    /// Whether a chain is available at `lastAvailIndex`, reading `avail->idx` only when
    /// the chains seen at its last read are all taken.
    @inline(__always)
    private func nextAvailable() throws(VirtqueueError) -> Bool {
        if lastAvailIndex == seenAvailIndex {
            guard isEnabled, ringsReachable() else { return false }
            let now = avail.index
            guard try pending(now) > 0 else { return false }
            // The ring entry and the descriptors were written before avail->idx (§2.7.13):
            // read them only after the index (acquire). The index is cached only here,
            // next to its fence.
            atomicMemoryFence(ordering: .acquiring)
            seenAvailIndex = now
        } else {
            // Chains up to the index read before, after its fence. `unpop` only moves
            // `lastAvailIndex` back inside what that read checked (≤ size ahead).
            guard isEnabled, ringsReachable() else { return false }
        }
        // At most `size` chains out at once: a driver that moves avail->idx on while the
        // device holds every entry re-offers descriptors still in use (§2.7.13.3).
        guard lastAvailIndex &- usedIndex &- pendingUsed < size else { throw .queueSizeExceeded(size: size) }
        return true
    }

    /// Gives back the last `count` chains taken (a frame did not fit after all); the
    /// driver cannot tell, since nothing was published.
    public func unpop(_ count: UInt16) { lastAvailIndex &-= count }

    /// Follows a chain from `head` (§2.7.5, §2.7.5.3). A chain is at most
    /// `maxChainDescriptors` long, an indirect table's entries included; every step spends
    /// one unit of that, so loops and runaway chains end with an error, and a pop walks at
    /// most that many descriptors (Docs/robustness.md: a kick's budget is overrun by one
    /// chain at most).
    private func walk(head: UInt16, into chain: inout DescriptorChain) throws(VirtqueueError) {
        guard head < size else { throw .headOutOfRange(head) }
        chain.clear(head: head)
        var table = descriptors
        var tableEntries = Int(size)
        var budget = Self.maxChainDescriptors
        var inIndirect = false
        var i = Int(head)
        var seenWritable = false
        while true {
            let d = VirtqDescriptor.load(table, index: i)
            if d.flags.contains(.indirect) {
                guard features.indirectDescriptors else { throw .indirectNotNegotiated }
                guard !inIndirect else { throw .nestedIndirect }
                guard !d.flags.contains(.next) else { throw .indirectWithNext }
                guard d.length > 0, d.length % 16 == 0, d.length / 16 <= SplitVirtqueue.maxIndirectEntries else {
                    throw .badIndirectLength(d.length)
                }
                do {
                    table = try memory.hostRange(GuestAddress(d.address), length: UInt64(d.length))
                } catch {
                    throw .indirectNotInRAM(address: d.address, length: d.length)
                }
                inIndirect = true
                tableEntries = Int(d.length / 16)
                i = 0
                continue
            }
            let writable = d.flags.contains(.write)
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(d.address), length: d.length), writable: writable)
            budget -= 1
            guard d.flags.contains(.next) else { return }
            guard Int(d.next) < tableEntries else { throw .nextOutOfRange(d.next) }
            guard budget > 0 else { throw .chainTooLong(limit: Self.maxChainDescriptors) }
            i = Int(d.next)
        }
    }

    // MARK: Returning chains

    /// Writes a used element for `head` with `length` bytes written into the chain; it
    /// becomes visible to the driver at the next `publishUsed()`.
    public func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        guard isEnabled else { return }
        // The ring left RAM while the chain was out (a block request in flight).
        guard ringsReachable() else {
            throw .ringNotInRAM(part: "device area", address: configuration.deviceArea.raw, length: VirtqUsedRing.length(size: size))
        }
        guard pendingUsed < size else { throw .usedRingOverflow }
        used.store(slot: (usedIndex &+ pendingUsed) & mask, id: UInt32(head), length: length)
        pendingUsed &+= 1
    }

    /// Publishes the pending used elements by moving `used->idx` (§2.7.8). The elements
    /// must be visible before the index (release).
    public func publishUsed() {
        guard isEnabled, pendingUsed > 0, ringsReachable() else { return }
        atomicMemoryFence(ordering: .releasing)
        usedIndex &+= pendingUsed
        pendingUsed = 0
        used.setIndex(usedIndex)
    }

    /// Whether the driver wants a used-buffer notification for what was published since
    /// the last one (§2.7.10 with EVENT_IDX, else the NO_INTERRUPT flag, §2.7.7).
    public func needsNotification() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        // Our used->idx store must be visible before we read the driver's suppression
        // state, or both sides may decide the other will act (a lost interrupt).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        guard features.eventIndex else { return avail.flags & VirtqAvailRing.noInterrupt == 0 }
        let new = usedIndex
        let old = signalledUsed
        signalledUsed = new
        guard let old else { return true }
        // vring_need_event(event, new, old) (§2.7.10).
        return new &- avail.usedEvent &- 1 < new &- old
    }

    // MARK: Device-side notification suppression (§2.7.10, §2.7.7)

    /// Asks the driver to notify when it adds chains past those the device has seen, and
    /// answers whether some arrived meanwhile (then the device should keep working
    /// instead of waiting). With EVENT_IDX this writes `avail_event`; otherwise it
    /// clears VIRTQ_USED_F_NO_NOTIFY.
    public func enableNotifications() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        requestNotification(after: lastAvailIndex)
        return avail.index != lastAvailIndex
    }

    public func enableNotificationsForMore() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        // vring_need_event fires once the driver's index passes what is there now.
        let seen = avail.index
        requestNotification(after: seen)
        return avail.index != seen
    }

    private func requestNotification(after index: UInt16) {
        if features.eventIndex { used.setAvailEvent(index) } else { used.setFlags(0) }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Tells the driver that notifications are not needed while the device is busy with
    /// the queue (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX a stale `avail_event` does it).
    public func disableNotifications() {
        guard isEnabled, !features.eventIndex, ringsReachable() else { return }
        used.setFlags(VirtqUsedRing.noNotify)
    }
}
