import Synchronization
import VMMCore

/// A split virtqueue (virtio 1.2 §2.7) seen from the device: the descriptor table, the
/// driver ("available") ring and the device ("used") ring in guest RAM.
///
/// The rings are checked once when the driver enables the queue: the size must be a
/// power of two ≤ `maxSize`, each part aligned as §2.7 requires and wholly inside one RAM
/// region; the device then keeps host views of them (guest RAM never moves). Everything
/// read from them afterwards — indices, heads, `next` links, indirect tables — is checked
/// again on every use, since the guest can rewrite the rings at any time.
///
/// Not thread-safe by itself: the owning device's lock serializes all calls.
public final class SplitVirtqueue: @unchecked Sendable {
    public static let maxIndirectEntries: UInt32 = 1024

    public let index: Int
    public let maxSize: UInt16
    private let memory: GuestMemory

    // Programmed by the driver through the common configuration (§4.1.4.3).
    public internal(set) var size: UInt16
    public internal(set) var descriptorTable = GuestAddress(0)
    public internal(set) var driverArea = GuestAddress(0)
    public internal(set) var deviceArea = GuestAddress(0)
    public internal(set) var msixVector: UInt16 = virtioNoVector
    public private(set) var isEnabled = false

    // Negotiated features that change ring behaviour.
    public internal(set) var usesEventIndex = false
    public internal(set) var allowsIndirect = false

    /// The next avail ring slot the device will read.
    public private(set) var lastAvailIndex: UInt16 = 0
    /// `used->idx` as last published.
    public private(set) var usedIndex: UInt16 = 0
    /// Used entries written but not yet published by `publishUsed()`.
    public private(set) var pendingUsed: UInt16 = 0
    /// `used->idx` when the driver was last notified (EVENT_IDX, §2.7.10); nil forces one.
    private var signalledUsed: UInt16?

    private var descriptors = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var avail = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var used = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    init(index: Int, maxSize: UInt16, memory: GuestMemory) {
        self.index = index
        self.maxSize = maxSize
        self.size = maxSize
        self.memory = memory
    }

    // MARK: Lifecycle

    /// `queue_enable = 1`: validates and maps the rings (§2.7: desc 16-, avail 2-, used 4-byte aligned).
    func enable() throws(VirtqueueError) {
        guard size != 0, size <= maxSize, size.nonzeroBitCount == 1 else { throw .badQueueSize(size) }
        let n = UInt64(size)
        descriptors = try memory.mapRing("descriptor table", descriptorTable, length: 16 * n, align: 16)
        avail = try memory.mapRing("driver area", driverArea, length: 6 + 2 * n, align: 2)
        used = try memory.mapRing("device area", deviceArea, length: 6 + 8 * n, align: 4)
        lastAvailIndex = 0
        usedIndex = 0
        pendingUsed = 0
        signalledUsed = nil
        isEnabled = true
    }

    /// Device reset: back to the state before the driver configured anything.
    func reset() {
        isEnabled = false
        size = maxSize
        descriptorTable = GuestAddress(0); driverArea = GuestAddress(0); deviceArea = GuestAddress(0)
        msixVector = virtioNoVector
        usesEventIndex = false; allowsIndirect = false
        lastAvailIndex = 0; usedIndex = 0; pendingUsed = 0; signalledUsed = nil
        descriptors = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        avail = descriptors
        used = descriptors
    }

    /// Stops using the rings after an error, until the driver resets the device.
    func disable() { isEnabled = false }

    // MARK: Ring fields (little-endian, §2.7)

    private var mask: UInt16 { size &- 1 }

    /// `avail->idx`: where the driver will put its next chain.
    private var availIndex: UInt16 { ringLoad16(avail, 2) }
    /// `avail->flags` (VIRTQ_AVAIL_F_NO_INTERRUPT = 1).
    private var availFlags: UInt16 { ringLoad16(avail, 0) }
    /// `used_event`, after the avail ring (§2.7.10).
    private var usedEvent: UInt16 { ringLoad16(avail, 4 + 2 * Int(size)) }

    // MARK: Taking chains

    /// Chains the driver made available that the device has not taken. Throws when the
    /// index ran ahead by more than the queue size (§2.7.13.3: impossible for a sane driver).
    public func availableCount() throws(VirtqueueError) -> UInt16 {
        guard isEnabled else { return 0 }
        let now = availIndex
        let pending = now &- lastAvailIndex
        guard pending <= size else { throw .availIndexJump(lastSeen: lastAvailIndex, now: now, size: size) }
        return pending
    }

    /// Takes the next available chain into `chain`; false when there is none.
    public func pop(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool {
        guard try availableCount() > 0 else { return false }
        // The ring entry and the descriptors were written before avail->idx (§2.7.13):
        // read them only after the index (acquire).
        atomicMemoryFence(ordering: .acquiring)
        let head = ringLoad16(avail, 4 + 2 * Int(lastAvailIndex & mask))
        try walk(head: head, into: &chain)
        lastAvailIndex &+= 1
        return true
    }

    /// Gives back the last `count` chains taken (a frame did not fit after all); the
    /// driver cannot tell, since nothing was published.
    public func unpop(_ count: UInt16) { lastAvailIndex &-= count }

    /// Follows a chain from `head` (§2.7.5, §2.7.5.3). Every step spends one unit of a
    /// budget equal to the table's size, so loops and runaway chains end with an error.
    private func walk(head: UInt16, into chain: inout DescriptorChain) throws(VirtqueueError) {
        guard head < size else { throw .headOutOfRange(head) }
        chain.clear(head: head)
        var table = descriptors
        var tableEntries = Int(size)
        var budget = tableEntries
        var inIndirect = false
        var i = Int(head)
        var seenWritable = false
        while true {
            let base = i * 16
            let address = UInt64(littleEndian: table.loadUnaligned(fromByteOffset: base, as: UInt64.self))
            let length = UInt32(littleEndian: table.loadUnaligned(fromByteOffset: base + 8, as: UInt32.self))
            let flags = UInt16(littleEndian: table.loadUnaligned(fromByteOffset: base + 12, as: UInt16.self))
            let next = UInt16(littleEndian: table.loadUnaligned(fromByteOffset: base + 14, as: UInt16.self))
            if flags & 4 != 0 { // VIRTQ_DESC_F_INDIRECT
                guard allowsIndirect else { throw .indirectNotNegotiated }
                guard !inIndirect else { throw .nestedIndirect }
                guard flags & 1 == 0 else { throw .indirectWithNext }
                guard length > 0, length % 16 == 0, length / 16 <= SplitVirtqueue.maxIndirectEntries else {
                    throw .badIndirectLength(length)
                }
                do {
                    table = try memory.hostRange(GuestAddress(address), length: UInt64(length))
                } catch {
                    throw .indirectNotInRAM(address: address, length: length)
                }
                inIndirect = true
                tableEntries = Int(length / 16)
                budget = tableEntries
                i = 0
                continue
            }
            let writable = flags & 2 != 0 // VIRTQ_DESC_F_WRITE
            if writable { seenWritable = true } else if seenWritable { throw .readableAfterWritable }
            chain.append(GuestBuffer(address: GuestAddress(address), length: length), writable: writable)
            budget -= 1
            guard flags & 1 != 0 else { return } // VIRTQ_DESC_F_NEXT
            guard Int(next) < tableEntries else { throw .nextOutOfRange(next) }
            guard budget > 0 else { throw .chainTooLong(limit: tableEntries) }
            i = Int(next)
        }
    }

    // MARK: Returning chains

    /// Writes a used element for `head` with `length` bytes written into the chain; it
    /// becomes visible to the driver at the next `publishUsed()`.
    public func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        guard isEnabled else { return }
        guard pendingUsed < size else { throw .usedRingOverflow }
        let slot = Int((usedIndex &+ pendingUsed) & mask)
        used.storeBytes(of: UInt32(head).littleEndian, toByteOffset: 4 + 8 * slot, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: 8 + 8 * slot, as: UInt32.self)
        pendingUsed &+= 1
    }

    /// Publishes the pending used elements by moving `used->idx` (§2.7.8). The elements
    /// must be visible before the index (release).
    public func publishUsed() {
        guard isEnabled, pendingUsed > 0 else { return }
        atomicMemoryFence(ordering: .releasing)
        usedIndex &+= pendingUsed
        pendingUsed = 0
        ringStore16(used, 2, usedIndex)
    }

    /// Whether the driver wants a used-buffer notification for what was published since
    /// the last one (§2.7.10 with EVENT_IDX, else the NO_INTERRUPT flag, §2.7.7).
    public func needsNotification() -> Bool {
        guard isEnabled else { return false }
        // Our used->idx store must be visible before we read the driver's suppression
        // state, or both sides may decide the other will act (a lost interrupt).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        guard usesEventIndex else { return availFlags & 1 == 0 }
        let new = usedIndex
        let old = signalledUsed
        signalledUsed = new
        guard let old else { return true }
        // vring_need_event(event, new, old) (§2.7.10).
        return new &- usedEvent &- 1 < new &- old
    }

    // MARK: Device-side notification suppression (§2.7.10, §2.7.7)

    /// Asks the driver to notify when it adds chains past those the device has seen, and
    /// answers whether some arrived meanwhile (then the device should keep working
    /// instead of waiting). With EVENT_IDX this writes `avail_event`; otherwise it
    /// clears VIRTQ_USED_F_NO_NOTIFY.
    public func enableNotifications() -> Bool {
        guard isEnabled else { return false }
        if usesEventIndex {
            ringStore16(used, 4 + 8 * Int(size), lastAvailIndex)
        } else {
            ringStore16(used, 0, 0)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return availIndex != lastAvailIndex
    }

    public func enableNotificationsForMore() -> Bool {
        guard isEnabled else { return false }
        let seen = availIndex
        if usesEventIndex {
            // vring_need_event fires once the driver's index passes `seen`.
            ringStore16(used, 4 + 8 * Int(size), seen)
        } else {
            ringStore16(used, 0, 0)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return availIndex != seen
    }

    /// Tells the driver that notifications are not needed while the device is busy with
    /// the queue (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX a stale `avail_event` does it).
    public func disableNotifications() {
        guard isEnabled, !usesEventIndex else { return }
        ringStore16(used, 0, 1)
    }
}
