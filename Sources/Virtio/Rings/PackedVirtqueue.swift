import Synchronization
import VMMCore

/// A packed virtqueue (virtio 1.2 §2.8) seen from the device: one descriptor ring that
/// driver and device both write, with avail/used flag bits and wrap counters, and two
/// event-suppression structures (driver area: what the driver wants; device area: what
/// the device wants).
///
/// Like `SplitVirtqueue`, the ring is checked and mapped at enable (and again when guest
/// memory is remapped, `RingReachability`) and everything in it is checked again on use. Chains must be returned in the order they were taken (the
/// devices here do), which is what lets the used side advance by each chain's length.
public final class PackedVirtqueue: Virtqueue, @unchecked Sendable {
    public let index: Int
    public let size: UInt16
    public private(set) var isEnabled = true
    private let memory: GuestMemory
    private let features: VirtqueueConfiguration.RingFeatures

    private var nextAvail: UInt16 = 0, availWrap = true
    /// The used side as published, and as it will be once the pending entries are.
    private var nextUsed: UInt16 = 0, usedWrap = true
    private var pendingNextUsed: UInt16 = 0, pendingUsedWrap = true
    private var signalledUsed: UInt16?
    /// Chains taken and not yet returned: where each started and how many ring slots it used.
    private var inFlight: [(position: UInt16, wrap: Bool, slots: UInt16)] = []
    private var pending: [(slot: UInt16, wrap: Bool, id: UInt16, length: UInt32)] = []

    private let configuration: VirtqueueConfiguration
    private var ring: UnsafeMutableRawBufferPointer
    private var driverEvent: VirtqEventSuppression
    private var deviceEvent: VirtqEventSuppression
    private var reachability: RingReachability

    /// `queue_enable = 1` with a packed ring: any size from 1 to the maximum (§2.8: not
    /// necessarily a power of two), ring 16-byte aligned, event structures 4-byte aligned.
    init(index: Int, configuration c: VirtqueueConfiguration, features: VirtqueueConfiguration.RingFeatures,
         memory: GuestMemory) throws(VirtqueueError) {
        guard c.size != 0, c.size <= c.maxSize else { throw .badQueueSize(c.size) }
        self.index = index
        self.size = c.size
        self.memory = memory
        self.features = features
        configuration = c
        reachability = RingReachability(memory: memory)
        (ring, driverEvent, deviceEvent) = try Self.mapRings(c, memory: memory)
        inFlight.reserveCapacity(Int(c.size))
        pending.reserveCapacity(Int(c.size))
    }

    private static func mapRings(_ c: VirtqueueConfiguration, memory: GuestMemory) throws(VirtqueueError)
        -> (UnsafeMutableRawBufferPointer, VirtqEventSuppression, VirtqEventSuppression) {
        let ring = try memory.mapRing("descriptor ring", c.descriptorArea, length: UInt64(VirtqPackedDescriptor.size) * UInt64(c.size), align: 16)
        let driverEvent = VirtqEventSuppression(memory: try memory.mapRing("driver event suppression", c.driverArea,
                                                                           length: VirtqEventSuppression.length, align: 4))
        let deviceEvent = VirtqEventSuppression(memory: try memory.mapRing("device event suppression", c.deviceArea,
                                                                           length: VirtqEventSuppression.length, align: 4))
        return (ring, driverEvent, deviceEvent)
    }

    /// Whether the ring can be touched now (`RingReachability`); maps it again first when
    /// guest memory was remapped since.
    private func ringsReachable() -> Bool {
        reachability.check(memory) { () throws(VirtqueueError) in
            (ring, driverEvent, deviceEvent) = try Self.mapRings(configuration, memory: memory)
        }
    }

    func disable() { isEnabled = false }

    /// A descriptor is available when its AVAIL bit equals the wrap counter and its USED
    /// bit does not (§2.8.1).
    private func isAvailable(at position: UInt16, wrap: Bool) -> Bool {
        let flags = VirtqPackedDescriptor.loadFlags(ring, index: Int(position))
        return flags.contains(.avail) == wrap && flags.contains(.used) != wrap
    }

    private func advance(_ position: inout UInt16, _ wrap: inout Bool, by n: UInt16) {
        // n ≤ size, so one subtraction brings the position back into the ring.
        let (sum, _) = position.addingReportingOverflow(n)
        if sum >= size || sum < position {
            position = sum &- size
            wrap.toggle()
        } else {
            position = sum
        }
    }

    public var pendingUsed: UInt16 { UInt16(truncatingIfNeeded: pending.count) }

    public func pop(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool {
        guard isEnabled, ringsReachable(), isAvailable(at: nextAvail, wrap: availWrap) else { return false }
        // The descriptors were written before the first one's flags (§2.8.21): acquire.
        atomicMemoryFence(ordering: .acquiring)
        chain.clear(head: 0)
        // At most `size` chains out at once: a driver that flips the wrap bit of slots the
        // device still holds would otherwise be served them again, without end.
        guard inFlight.count < Int(size) else { throw .queueSizeExceeded(size: size) }
        var position = nextAvail, wrap = availWrap
        var slots: UInt16 = 0
        var seenWritable = false
        while true {
            guard slots < size else { throw .chainTooLong(limit: Int(size)) }
            let d = VirtqPackedDescriptor.load(ring, index: Int(position))
            slots += 1
            advance(&position, &wrap, by: 1)
            chain.head = d.id // the buffer ID travels in every descriptor; the last one counts
            if d.flags.contains(.indirect) {
                guard features.indirectDescriptors else { throw .indirectNotNegotiated }
                // §2.8.19: an indirect descriptor is the whole chain.
                guard !d.flags.contains(.next), slots == 1 else { throw .indirectWithNext }
                try walkIndirect(address: d.address, length: d.length, into: &chain)
                break
            }
            let writable = d.flags.contains(.write)
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(d.address), length: d.length), writable: writable)
            if !d.flags.contains(.next) { break }
        }
        inFlight.append((nextAvail, availWrap, slots))
        nextAvail = position
        availWrap = wrap
        return true
    }

    /// The next chain when it is one device-writable descriptor, taken; nil, and nothing
    /// taken, when there is none or it has another shape (`Virtqueue.popWritableBuffer`).
    public func popWritableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        try popSingleBuffer(writable: true)
    }

    /// The next chain when it is one device-readable descriptor (`Virtqueue.popReadableBuffer`).
    public func popReadableBuffer() throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        try popSingleBuffer(writable: false)
    }

    /// The next chain when it is one descriptor, without NEXT or INDIRECT, in the
    /// direction asked; taken.
    @inline(__always)
    private func popSingleBuffer(writable: Bool) throws(VirtqueueError) -> (head: UInt16, buffer: GuestBuffer)? {
        guard isEnabled, ringsReachable(), isAvailable(at: nextAvail, wrap: availWrap) else { return nil }
        atomicMemoryFence(ordering: .acquiring)
        let d = VirtqPackedDescriptor.load(ring, index: Int(nextAvail))
        guard d.flags.contains(.write) == writable, !d.flags.contains(.next), !d.flags.contains(.indirect) else { return nil }
        guard inFlight.count < Int(size) else { throw .queueSizeExceeded(size: size) }
        inFlight.append((nextAvail, availWrap, 1))
        advance(&nextAvail, &availWrap, by: 1)
        return (d.id, GuestBuffer(address: GuestAddress(d.address), length: d.length))
    }

    /// A table of packed descriptors used in order; only WRITE is meaningful in it (§2.8.19).
    /// It is the whole chain: at most `SplitVirtqueue.maxChainDescriptors` entries.
    private func walkIndirect(address: UInt64, length: UInt32, into chain: inout DescriptorChain) throws(VirtqueueError) {
        guard length > 0, length % 16 == 0, length / 16 <= SplitVirtqueue.maxIndirectEntries else {
            throw .badIndirectLength(length)
        }
        let table: UnsafeMutableRawBufferPointer
        do {
            table = try memory.hostRange(GuestAddress(address), length: UInt64(length))
        } catch {
            throw .indirectNotInRAM(address: address, length: length)
        }
        var seenWritable = false
        for i in 0 ..< Int(length / 16) {
            let d = VirtqPackedDescriptor.load(table, index: i)
            guard !d.flags.contains(.indirect) else { throw .nestedIndirect }
            let writable = d.flags.contains(.write)
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(d.address), length: d.length), writable: writable)
        }
    }

    public func unpop(_ count: UInt16) {
        let k = min(Int(count), inFlight.count)
        guard k > 0 else { return }
        let first = inFlight[inFlight.count - k]
        nextAvail = first.position
        availWrap = first.wrap
        inFlight.removeLast(k)
    }

    public func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        guard isEnabled else { return }
        guard !inFlight.isEmpty else { throw .usedRingOverflow }
        // The ring left RAM while the chain was out (a block request in flight).
        guard ringsReachable() else {
            throw .ringNotInRAM(part: "descriptor ring", address: configuration.descriptorArea.raw,
                                length: UInt64(VirtqPackedDescriptor.size) * UInt64(size))
        }
        let taken = inFlight.removeFirst()
        pending.append((pendingNextUsed, pendingUsedWrap, head, length))
        advance(&pendingNextUsed, &pendingUsedWrap, by: taken.slots)
    }

    /// Writes IDs and lengths, then the flags — the first entry's last, so the driver
    /// sees the batch all at once (§2.8.21.3.1).
    public func publishUsed() {
        guard isEnabled, let first = pending.first, ringsReachable() else { return }
        for p in pending { VirtqPackedDescriptor.storeUsed(ring, index: Int(p.slot), id: p.id, length: p.length) }
        atomicMemoryFence(ordering: .releasing)
        func flags(_ wrap: Bool) -> VirtqDescriptorFlags { wrap ? [.avail, .used] : [] }
        for p in pending.dropFirst() { VirtqPackedDescriptor.storeFlags(ring, index: Int(p.slot), flags(p.wrap)) }
        atomicMemoryFence(ordering: .releasing)
        VirtqPackedDescriptor.storeFlags(ring, index: Int(first.slot), flags(first.wrap))
        pending.removeAllKeepingStorage()
        nextUsed = pendingNextUsed
        usedWrap = pendingUsedWrap
    }

    public func needsNotification() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let old = signalledUsed
        let new = nextUsed
        signalledUsed = new
        switch driverEvent.mode {
        case .disable: return false
        case .descriptor where features.eventIndex:
            guard let old else { return true }
            // vring_packed_need_event: an offset from the other lap counts one ring earlier.
            let asked = driverEvent.descriptor
            var event = asked.offset
            if asked.wrap != usedWrap { event &-= size }
            return new &- event &- 1 < new &- old
        default: return true
        }
    }

    public func enableNotifications() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        requestNotification(at: nextAvail, wrap: availWrap)
        return isAvailable(at: nextAvail, wrap: availWrap)
    }

    public func enableNotificationsForMore() -> Bool {
        guard isEnabled, ringsReachable() else { return false }
        // The first slot past what the driver has made available (at most one lap).
        var slot = nextAvail, wrap = availWrap, steps: UInt16 = 0
        while steps < size, isAvailable(at: slot, wrap: wrap) {
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle() }
            steps &+= 1
        }
        requestNotification(at: slot, wrap: wrap)
        return steps < size && isAvailable(at: slot, wrap: wrap)
    }

    private func requestNotification(at slot: UInt16, wrap: Bool) {
        if features.eventIndex {
            deviceEvent.set(.descriptor, offset: slot, wrap: wrap)
        } else {
            deviceEvent.set(.enable)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    public func disableNotifications() {
        guard isEnabled, ringsReachable() else { return }
        deviceEvent.set(.disable)
    }
}
