import VMMCore

/// One descriptor chain as the device sees it after walking it (virtio 1.2 §2.7.5):
/// the device-readable buffers, then the device-writable ones, and the head index to
/// return in the used ring. The arrays keep their capacity between chains, so a device
/// that reuses one `DescriptorChain` allocates nothing per request.
///
/// Buffer addresses are *not* checked against RAM here: the device resolves them with
/// `GuestMemory.resolve`, which throws for out-of-RAM buffers, and then returns the chain
/// unused (length 0) — one bad request, not a broken ring.
public struct DescriptorChain: Sendable {
    public internal(set) var head: UInt16 = 0
    public internal(set) var readable: [GuestBuffer] = []
    public internal(set) var writable: [GuestBuffer] = []
    /// Sum of the readable / writable lengths (a chain is at most 1,024 descriptors of
    /// < 4 GiB each, so these cannot overflow).
    public internal(set) var readableLength: UInt64 = 0
    public internal(set) var writableLength: UInt64 = 0
    /// Descriptors the walk visited (an indirect table's entries, not the table's own
    /// descriptor): what a device charges to the action's cost.
    @inlinable public var descriptorCount: Int { readable.count &+ writable.count }

    public init() {
        readable.reserveCapacity(32)
        writable.reserveCapacity(32)
    }

    private init(unreserved: Void) {}

    /// This chain with its storage, leaving an empty one without storage in its place (no
    /// copy, no allocation): how a device's pass takes its scratch chain into a local and
    /// gives it back at the end (see `Array.take`).
    public mutating func take() -> DescriptorChain {
        var out = DescriptorChain(unreserved: ())
        swap(&out, &self)
        return out
    }

    mutating func clear(head: UInt16) {
        self.head = head
        readable.removeAllKeepingStorage()
        writable.removeAllKeepingStorage()
        readableLength = 0
        writableLength = 0
    }

    mutating func append(_ buffer: GuestBuffer, writable isWritable: Bool) {
        if isWritable {
            writable.append(buffer)
            writableLength &+= UInt64(buffer.length)
        } else {
            readable.append(buffer)
            readableLength &+= UInt64(buffer.length)
        }
    }
}

/// Why a virtqueue can no longer be trusted. Each one is a driver bug or a hostile guest;
/// the transport answers with DEVICE_NEEDS_RESET and a config interrupt (§2.1.1) and
/// stops touching the queue until the driver resets the device.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    case badQueueSize(UInt16)
    case misaligned(part: String, address: UInt64)
    case ringNotInRAM(part: String, address: UInt64, length: UInt64)
    /// `avail->idx` moved more than the queue size past what the device consumed (§2.7.13.3).
    /// `used` is the device's used index then (published + pending), for the log: a sane
    /// driver keeps `now` within `size` of it as well.
    case availIndexJump(lastSeen: UInt16, now: UInt16, size: UInt16, used: UInt16)
    case headOutOfRange(UInt16)
    case nextOutOfRange(UInt16)
    /// The chain visited more descriptors than its table holds: a loop or a runaway chain.
    case chainTooLong(limit: Int)
    case indirectNotNegotiated
    /// §2.7.5.3.1: no INDIRECT inside an indirect table.
    case nestedIndirect
    /// §2.7.5.3.1: INDIRECT and NEXT must not be set together.
    case indirectWithNext
    /// The table length is 0, not a multiple of 16, or longer than `maxIndirectEntries`.
    case badIndirectLength(UInt32)
    case indirectNotInRAM(address: UInt64, length: UInt32)
    /// §2.7.4.2: device-readable descriptors must precede device-writable ones.
    case readableAfterWritable
    case usedRingOverflow
    /// A chain offered while the device already holds as many as the queue has entries:
    /// the driver re-offered descriptors the device has not returned (QEMU's "Virtqueue
    /// size exceeded").
    case queueSizeExceeded(size: UInt16)

    public var description: String {
        switch self {
        case let .badQueueSize(s): "queue size \(s) is not a power of two in the allowed range"
        case let .misaligned(p, a): "\(p) at 0x\(String(a, radix: 16)) is misaligned"
        case let .ringNotInRAM(p, a, l): "\(p) 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) is not RAM"
        case let .availIndexJump(l, n, s, u): "avail index jumped from \(l) to \(n) (queue size \(s), used index \(u))"
        case let .headOutOfRange(h): "chain head \(h) is beyond the queue"
        case let .nextOutOfRange(n): "descriptor next \(n) is beyond its table"
        case let .chainTooLong(l): "descriptor chain longer than \(l) (loop?)"
        case .indirectNotNegotiated: "indirect descriptor without VIRTIO_F_INDIRECT_DESC"
        case .nestedIndirect: "indirect descriptor inside an indirect table"
        case .indirectWithNext: "descriptor has both INDIRECT and NEXT"
        case let .badIndirectLength(l): "indirect table length \(l) is not a positive multiple of 16 within limits"
        case let .indirectNotInRAM(a, l): "indirect table 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) is not RAM"
        case .readableAfterWritable: "device-readable descriptor after a device-writable one"
        case .usedRingOverflow: "more used entries than the queue holds"
        case let .queueSizeExceeded(size): "more than \(size) chains taken and not returned: the driver offered descriptors still in use"
        }
    }
}
