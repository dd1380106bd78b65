import VMMCore

/// One descriptor ring as the guest programmed it (Intel 8254x SDM §3.2.6 receive, §3.4
/// transmit): base (xDBAL/xDBAH), length in bytes (xDLEN, a multiple of 128), head and
/// tail indices. Built from the registers once per transmit pass or receive delivery and
/// checked before anything is read.
struct DescriptorRing {
    static let descriptorSize: UInt64 = 16

    let base: GuestAddress
    let count: UInt32
    private(set) var head: UInt32
    let tail: UInt32
    /// The ring's host view when it lies in one RAM region (always, for a ring Linux
    /// allocates: `dma_alloc_coherent`): descriptors are then read and written back
    /// through it, one lookup per pass instead of one per descriptor access. A ring
    /// across two adjacent regions goes through guest memory word by word. The view is
    /// used only within the pass that made it, under the device lock, which a vfio-user
    /// unmap also takes.
    private let host: UnsafeMutableRawBufferPointer?

    enum Problem: Error, CustomStringConvertible {
        case empty
        case headBeyondEnd(head: UInt32, count: UInt32)
        case tailBeyondEnd(tail: UInt32, count: UInt32)
        case notRAM(base: UInt64, length: UInt64)

        var description: String {
            switch self {
            case .empty: "ring length is 0"
            case let .headBeyondEnd(h, n): "head \(h) is beyond the \(n)-descriptor ring"
            case let .tailBeyondEnd(t, n): "tail \(t) is beyond the \(n)-descriptor ring"
            case let .notRAM(b, l): "ring 0x\(String(b, radix: 16))+0x\(String(l, radix: 16)) is not guest RAM"
            }
        }
    }

    /// `length` is the register value (its low 7 bits already cleared on write).
    init(baseLow: UInt32, baseHigh: UInt32, length: UInt32, head: UInt32, tail: UInt32, memory: GuestMemory) throws(Problem) {
        let count = length / UInt32(Self.descriptorSize)
        guard count > 0 else { throw .empty }
        guard head < count else { throw .headBeyondEnd(head: head, count: count) }
        guard tail < count else { throw .tailBeyondEnd(tail: tail, count: count) }
        let base = UInt64(baseHigh) << 32 | UInt64(baseLow & ~0xF)
        let bytes = UInt64(count) * Self.descriptorSize
        host = try? memory.hostRange(GuestAddress(base), length: bytes)
        guard host != nil || memory.isRAM(GuestAddress(base), length: bytes) else { throw .notRAM(base: base, length: bytes) }
        self.base = GuestAddress(base)
        self.count = count
        self.head = head
        self.tail = tail
    }

    /// Descriptors the hardware owns: from head up to (not including) tail.
    var available: UInt32 { tail >= head ? tail - head : count - head + tail }

    func next(_ index: UInt32) -> UInt32 { index + 1 == count ? 0 : index + 1 }

    /// The same ring with its head moved to `index` (a receive delivery's next frame starts
    /// there); an index outside the ring leaves it as it was.
    func advanced(to index: UInt32) -> DescriptorRing {
        var ring = self
        if index < count { ring.head = index }
        return ring
    }

    /// The guest address of descriptor `index` (inside the ring checked to be RAM).
    func address(_ index: UInt32) -> GuestAddress? {
        base.checkedAdd(index: UInt64(index), stride: Self.descriptorSize)
    }

    /// Descriptor `index`'s two little-endian words (bytes 0…7 and 8…15); nil if `index`
    /// is outside the ring or its memory cannot be read. `memory` is the one the ring was
    /// checked against (not kept here: a reference would be retained per frame).
    @inline(__always)
    func load(_ index: UInt32, memory: GuestMemory) -> (low: UInt64, high: UInt64)? {
        guard index < count else { return nil }
        let offset = Int(index) &* Int(Self.descriptorSize)
        if let host {
            return (UInt64(littleEndian: host.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                    UInt64(littleEndian: host.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
        }
        guard let address = address(index), let second = address.checkedAdd(8),
              let low = try? memory.load(UInt64.self, at: address), let high = try? memory.load(UInt64.self, at: second)
        else { return nil }
        return (low, high)
    }

    /// Writes bytes 8…15 of descriptor `index` (a receive write-back: length, checksum,
    /// status, errors, special) as one 8-byte store where the ring is host-viewed, so the
    /// driver never sees DD without the rest.
    @inline(__always)
    func storeHigh(_ value: UInt64, at index: UInt32, memory: GuestMemory) {
        guard index < count else { return }
        let offset = Int(index) &* Int(Self.descriptorSize) &+ 8
        if let host {
            host.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
        } else if let fields = address(index)?.checkedAdd(8) {
            try? memory.store(value, at: fields)
        }
    }
}
