import VMMCore

/// One queue's registers as the driver programs them through the transport (virtio 1.2
/// §4.1.4.3: queue_size, queue_desc/driver/device, queue_msix_vector) before enabling it.
/// The same registers describe a split ring (descriptor table, available ring, used ring)
/// and a packed one (descriptor ring, driver and device event suppression).
public struct VirtqueueConfiguration: Sendable, Equatable {
    /// The largest size the device supports (what `queue_size` reads before the driver
    /// writes it); a power of two ≤ 32768 (§2.7).
    public let maxSize: UInt16
    public var size: UInt16
    public var descriptorArea = GuestAddress(0)
    public var driverArea = GuestAddress(0)
    public var deviceArea = GuestAddress(0)
    public var msixVector: UInt16 = virtioNoVector

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        size = maxSize
    }

    /// Ring behaviour the negotiated features select.
    public struct RingFeatures: Sendable, Equatable {
        public var eventIndex: Bool
        public var indirectDescriptors: Bool
        public init(eventIndex: Bool, indirectDescriptors: Bool) {
            self.eventIndex = eventIndex
            self.indirectDescriptors = indirectDescriptors
        }
    }
}

extension GuestMemory {
    /// A ring area the driver placed at `address`: aligned as the spec requires (§2.7 table
    /// "Virtqueue Part Alignment", §2.8.10) and wholly inside one RAM region, or an error
    /// naming the part, which puts the device in NEEDS_RESET.
    func mapRing(_ part: String, _ address: GuestAddress, length: UInt64, align: UInt64) throws(VirtqueueError) -> UnsafeMutableRawBufferPointer {
        guard address.raw & (align - 1) == 0 else { throw .misaligned(part: part, address: address.raw) }
        do {
            return try hostRange(address, length: length)
        } catch {
            throw .ringNotInRAM(part: part, address: address.raw, length: length)
        }
    }
}

/// Whether a queue's host views of its rings still belong to guest memory. RAM can be
/// unmapped and mapped again under a running device (a vfio-user client's DMA_UNMAP and
/// DMA_MAP; QEMU's memory listener does it when it splits a section), so a view taken at
/// enable is valid only for the memory layout it was taken in: when the layout moves, the
/// queue maps its rings again, and while one is not wholly in RAM the device cannot reach
/// it — as with bus mastering off, the queue does nothing until it is RAM again or the
/// driver resets. A view from an older layout is never touched: its pages may be gone.
struct RingReachability {
    private var generation: UInt64
    private var reachable = true

    init(memory: GuestMemory) { generation = memory.layoutGeneration }

    /// Runs `remap` when the layout moved since the last check; whether the rings are in RAM.
    mutating func check(_ memory: GuestMemory, remap: () throws(VirtqueueError) -> Void) -> Bool {
        let now = memory.layoutGeneration
        guard now != generation else { return reachable }
        generation = now
        do {
            try remap()
            reachable = true
        } catch {
            reachable = false
        }
        return reachable
    }
}
