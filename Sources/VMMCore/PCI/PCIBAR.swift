/// What a Base Address Register decodes (PCI Local Bus 3.0 §6.2.5.1).
public enum PCIBARKind: Equatable, Sendable {
    /// 32-bit memory BAR.
    case memory32(size: UInt64, prefetchable: Bool = false)
    /// 64-bit memory BAR: occupies this BAR index and the next.
    case memory64(size: UInt64, prefetchable: Bool = false)
    /// I/O port BAR.
    case io(size: UInt64)

    public var size: UInt64 {
        switch self {
        case let .memory32(s, _), let .memory64(s, _), let .io(s): s
        }
    }
    public var isIO: Bool { if case .io = self { true } else { false } }
    public var is64Bit: Bool { if case .memory64 = self { true } else { false } }

    /// The read-only low bits of the BAR register.
    var flagBits: UInt32 {
        switch self {
        case .io: 0x1
        case let .memory32(_, p): p ? 0x8 : 0
        case let .memory64(_, p): 0x4 | (p ? 0x8 : 0)
        }
    }
}

/// Which address space a BAR access arrived through.
public enum AddressSpaceKind: Sendable { case memory, io }
