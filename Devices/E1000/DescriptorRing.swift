import VMMCore

/// One descriptor ring as the guest programmed it (Intel 8254x SDM §3.2.6 receive, §3.4
/// transmit): base (xDBAL/xDBAH), length in bytes (xDLEN, a multiple of 128), head and
/// tail indices. Built from the registers at each use and checked before anything is read.
struct DescriptorRing {
    static let descriptorSize: UInt64 = 16

    let base: GuestAddress
    let count: UInt32
    let head: UInt32
    let tail: UInt32

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
        guard memory.isRAM(GuestAddress(base), length: UInt64(length)) else { throw .notRAM(base: base, length: UInt64(length)) }
        self.base = GuestAddress(base)
        self.count = count
        self.head = head
        self.tail = tail
    }

    /// Descriptors the hardware owns: from head up to (not including) tail.
    var available: UInt32 { tail >= head ? tail - head : count - head + tail }

    func next(_ index: UInt32) -> UInt32 { index + 1 == count ? 0 : index + 1 }

    /// The guest address of descriptor `index` (inside the ring checked to be RAM).
    func address(_ index: UInt32) -> GuestAddress? {
        base.checkedAdd(index: UInt64(index), stride: Self.descriptorSize)
    }
}
