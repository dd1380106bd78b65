import Synchronization
import VMMCore

/// A packed virtqueue (virtio 1.2 §2.8) seen from the device: one descriptor ring that
/// driver and device both write, with avail/used flag bits and wrap counters, and two
/// event-suppression structures (driver area: what the driver wants; device area: what
/// the device wants).
///
/// Like `SplitVirtqueue`, the ring is checked and mapped once at enable and everything in
/// it is checked again on use. Chains must be returned in the order they were taken (the
/// devices here do), which is what lets the used side advance by each chain's length.
public final class PackedVirtqueue: @unchecked Sendable {
    public let index: Int
    private let memory: GuestMemory
    public private(set) var size: UInt16 = 0
    public private(set) var isEnabled = false
    public internal(set) var usesEventIndex = false
    public internal(set) var allowsIndirect = false

    // Descriptor flags (§2.8.1).
    private static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4
    private static let avail: UInt16 = 1 << 7, used: UInt16 = 1 << 15
    // Event suppression flags (§2.8.10).
    private static let eventEnable: UInt16 = 0, eventDisable: UInt16 = 1, eventDescriptor: UInt16 = 2

    private var nextAvail: UInt16 = 0, availWrap = true
    /// The used side as published, and as it will be once the pending entries are.
    private var nextUsed: UInt16 = 0, usedWrap = true
    private var pendingNextUsed: UInt16 = 0, pendingUsedWrap = true
    private var signalledUsed: UInt16?
    /// Chains taken and not yet returned: where each started and how many ring slots it used.
    private var inFlight: [(position: UInt16, wrap: Bool, slots: UInt16)] = []
    private var pending: [(slot: UInt16, wrap: Bool, id: UInt16, length: UInt32)] = []

    private var ring = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var driverEvent = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var deviceEvent = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    init(index: Int, memory: GuestMemory) {
        self.index = index
        self.memory = memory
    }

    /// `queue_enable = 1` with a packed ring: any size from 1 to `maxSize` (§2.8: not
    /// necessarily a power of two), ring 16-byte aligned, event structures 4-byte aligned.
    func enable(size: UInt16, maxSize: UInt16, ring ringAddress: GuestAddress, driver: GuestAddress, device: GuestAddress) throws(VirtqueueError) {
        guard size != 0, size <= maxSize else { throw .badQueueSize(size) }
        ring = try memory.mapRing("descriptor ring", ringAddress, length: 16 * UInt64(size), align: 16)
        driverEvent = try memory.mapRing("driver event suppression", driver, length: 4, align: 4)
        deviceEvent = try memory.mapRing("device event suppression", device, length: 4, align: 4)
        self.size = size
        nextAvail = 0; availWrap = true
        nextUsed = 0; usedWrap = true
        pendingNextUsed = 0; pendingUsedWrap = true
        signalledUsed = nil
        inFlight.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        inFlight.reserveCapacity(Int(size))
        pending.reserveCapacity(Int(size))
        isEnabled = true
    }

    func reset() {
        isEnabled = false
        size = 0
        usesEventIndex = false; allowsIndirect = false
        inFlight.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        ring = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        driverEvent = ring
        deviceEvent = ring
    }

    func disable() { isEnabled = false }


    /// A descriptor is available when its AVAIL bit equals the wrap counter and its USED
    /// bit does not (§2.8.1).
    private func isAvailable(at position: UInt16, wrap: Bool) -> Bool {
        let flags = ringLoad16(ring, 16 * Int(position) + 14)
        return (flags & PackedVirtqueue.avail != 0) == wrap && (flags & PackedVirtqueue.used != 0) != wrap
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
}

extension PackedVirtqueue: Virtqueue {
    public var pendingUsed: UInt16 { UInt16(truncatingIfNeeded: pending.count) }

    public func pop(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool {
        guard isEnabled, isAvailable(at: nextAvail, wrap: availWrap) else { return false }
        // The descriptors were written before the first one's flags (§2.8.21): acquire.
        atomicMemoryFence(ordering: .acquiring)
        chain.clear(head: 0)
        var position = nextAvail, wrap = availWrap
        var slots: UInt16 = 0
        var seenWritable = false
        while true {
            guard slots < size else { throw .chainTooLong(limit: Int(size)) }
            let base = 16 * Int(position)
            let address = UInt64(littleEndian: ring.loadUnaligned(fromByteOffset: base, as: UInt64.self))
            let length = UInt32(littleEndian: ring.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self))
            let id = ringLoad16(ring, base + 12)
            let flags = ringLoad16(ring, base + 14)
            slots += 1
            advance(&position, &wrap, by: 1)
            chain.head = id // the buffer ID travels in every descriptor; the last one counts
            if flags & PackedVirtqueue.indirect != 0 {
                guard allowsIndirect else { throw .indirectNotNegotiated }
                // §2.8.19: an indirect descriptor is the whole chain.
                guard flags & PackedVirtqueue.next == 0, slots == 1 else { throw .indirectWithNext }
                try walkIndirect(address: address, length: length, into: &chain)
                break
            }
            let writable = flags & PackedVirtqueue.write != 0
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(address), length: length), writable: writable)
            if flags & PackedVirtqueue.next == 0 { break }
        }
        inFlight.append((nextAvail, availWrap, slots))
        nextAvail = position
        availWrap = wrap
        return true
    }

    /// A table of packed descriptors used in order; only WRITE is meaningful in it (§2.8.19).
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
            let base = 16 * i
            let a = UInt64(littleEndian: table.loadUnaligned(fromByteOffset: base, as: UInt64.self))
            let l = UInt32(littleEndian: table.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self))
            let flags = ringLoad16(table, base + 14)
            guard flags & PackedVirtqueue.indirect == 0 else { throw .nestedIndirect }
            let writable = flags & PackedVirtqueue.write != 0
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(a), length: l), writable: writable)
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
        let taken = inFlight.removeFirst()
        pending.append((pendingNextUsed, pendingUsedWrap, head, length))
        advance(&pendingNextUsed, &pendingUsedWrap, by: taken.slots)
    }

    /// Writes IDs and lengths, then the flags — the first entry's last, so the driver
    /// sees the batch all at once (§2.8.21.3.1).
    public func publishUsed() {
        guard isEnabled, let first = pending.first else { return }
        for p in pending {
            let base = 16 * Int(p.slot)
            ring.storeBytes(of: p.length.littleEndian, toByteOffset: base + 8, as: UInt32.self)
            ringStore16(ring, base + 12, p.id)
        }
        atomicMemoryFence(ordering: .releasing)
        func flags(_ wrap: Bool) -> UInt16 { wrap ? PackedVirtqueue.avail | PackedVirtqueue.used : 0 }
        for p in pending.dropFirst() { ringStore16(ring, 16 * Int(p.slot) + 14, flags(p.wrap)) }
        atomicMemoryFence(ordering: .releasing)
        ringStore16(ring, 16 * Int(first.slot) + 14, flags(first.wrap))
        pending.removeAll(keepingCapacity: true)
        nextUsed = pendingNextUsed
        usedWrap = pendingUsedWrap
    }

    public func needsNotification() -> Bool {
        guard isEnabled else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let old = signalledUsed
        let new = nextUsed
        signalledUsed = new
        let offWrap = ringLoad16(driverEvent, 0)
        switch ringLoad16(driverEvent, 2) & 3 {
        case PackedVirtqueue.eventDisable: return false
        case PackedVirtqueue.eventDescriptor where usesEventIndex:
            guard let old else { return true }
            // vring_packed_need_event: an offset from the other lap counts one ring earlier.
            var event = offWrap & 0x7FFF
            if (offWrap >> 15 != 0) != usedWrap { event &-= size }
            return new &- event &- 1 < new &- old
        default: return true
        }
    }

    public func enableNotifications() -> Bool {
        guard isEnabled else { return false }
        if usesEventIndex {
            ringStore16(deviceEvent, 0, nextAvail | (availWrap ? 0x8000 : 0))
            ringStore16(deviceEvent, 2, PackedVirtqueue.eventDescriptor)
        } else {
            ringStore16(deviceEvent, 2, PackedVirtqueue.eventEnable)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return isAvailable(at: nextAvail, wrap: availWrap)
    }

    public func enableNotificationsForMore() -> Bool {
        guard isEnabled else { return false }
        // The first slot past what the driver has made available (at most one lap).
        var slot = nextAvail, wrap = availWrap, steps: UInt16 = 0
        while steps < size, isAvailable(at: slot, wrap: wrap) {
            slot &+= 1
            if slot == size { slot = 0; wrap.toggle() }
            steps &+= 1
        }
        if usesEventIndex {
            ringStore16(deviceEvent, 0, slot | (wrap ? 0x8000 : 0))
            ringStore16(deviceEvent, 2, PackedVirtqueue.eventDescriptor)
        } else {
            ringStore16(deviceEvent, 2, PackedVirtqueue.eventEnable)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return steps < size && isAvailable(at: slot, wrap: wrap)
    }

    public func disableNotifications() {
        guard isEnabled else { return }
        ringStore16(deviceEvent, 2, PackedVirtqueue.eventDisable)
    }
}
