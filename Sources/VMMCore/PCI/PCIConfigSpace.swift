/// Standard type-0 header offsets (PCI Local Bus 3.0 §6.1).
public enum PCIConfigOffset {
    public static let vendorID = 0x00, deviceID = 0x02, command = 0x04, status = 0x06
    public static let revision = 0x08, classCode = 0x09, cacheLineSize = 0x0C, latencyTimer = 0x0D
    public static let headerType = 0x0E, bar0 = 0x10, subsystemVendorID = 0x2C, subsystemID = 0x2E
    public static let expansionROM = 0x30, capabilitiesPointer = 0x34, interruptLine = 0x3C, interruptPin = 0x3D
}

/// Command register bits (§6.2.2).
public struct PCICommand: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let ioSpace = PCICommand(rawValue: 1 << 0)
    public static let memorySpace = PCICommand(rawValue: 1 << 1)
    public static let busMaster = PCICommand(rawValue: 1 << 2)
    public static let interruptDisable = PCICommand(rawValue: 1 << 10)
    /// The bits this emulation lets a guest set; the rest read as zero.
    static let writable: PCICommand = [.ioSpace, .memorySpace, .busMaster, .interruptDisable,
                                        PCICommand(rawValue: 1 << 6), PCICommand(rawValue: 1 << 8)]
}

/// Identity of a PCI function, fixed at creation.
public struct PCIIdentity: Sendable {
    public var vendorID: UInt16, deviceID: UInt16
    public var subsystemVendorID: UInt16, subsystemID: UInt16
    public var revision: UInt8
    /// Class, subclass, programming interface (e.g. 0x02_00_00 Ethernet).
    public var classCode: UInt32

    public init(vendorID: UInt16, deviceID: UInt16, subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0,
                revision: UInt8 = 0, classCode: UInt32) {
        self.vendorID = vendorID; self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID; self.subsystemID = subsystemID
        self.revision = revision; self.classCode = classCode
    }
}

/// The 256-byte configuration space of one function: the type-0 header, BARs with the
/// sizing protocol, and a capability list. Every byte has a write mask, so guest writes
/// to read-only fields are ignored as hardware does; the status register's error bits
/// are write-one-to-clear. Capabilities that need behaviour (MSI, MSI-X) are given write
/// hooks by `PCIInterrupts`. Not thread-safe by itself: the bus holds the device's lock.
public final class PCIConfigSpace: @unchecked Sendable {
    public static let size = 256
    var bytes = [UInt8](repeating: 0, count: PCIConfigSpace.size)
    var writeMask = [UInt8](repeating: 0, count: PCIConfigSpace.size)
    var clearMask = [UInt8](repeating: 0, count: PCIConfigSpace.size) // RW1C bits
    public private(set) var bars: [PCIBARKind?] = Array(repeating: nil, count: 6)
    /// Called after a write that changed the command register or a BAR (the bus remaps).
    var onDecodeChange: (() -> Void)?
    /// Capability write hooks keyed by capability offset (called after the bytes are stored).
    var capabilityWriteHooks: [(range: Range<Int>, hook: (_ offset: Int, _ size: Int) -> Void)] = []
    private var nextCapability = 0x40

    public init(identity: PCIIdentity) {
        setIdentity(identity)
        setMask(PCIConfigOffset.command, width: 2, PCICommand.writable.rawValue)
        // Status: error bits 15..11 and 8 are RW1C (§6.2.3).
        clearMask[0x07] = 0xF9
        writeMask[PCIConfigOffset.cacheLineSize] = 0xFF
        writeMask[PCIConfigOffset.latencyTimer] = 0xFF
        writeMask[PCIConfigOffset.interruptLine] = 0xFF
    }

    /// Sets vendor/device/subsystem IDs, revision and class: what a device does first in its `init`.
    public func setIdentity(_ identity: PCIIdentity) {
        put16(PCIConfigOffset.vendorID, identity.vendorID)
        put16(PCIConfigOffset.deviceID, identity.deviceID)
        bytes[PCIConfigOffset.revision] = identity.revision
        bytes[0x09] = UInt8(truncatingIfNeeded: identity.classCode)
        bytes[0x0A] = UInt8(truncatingIfNeeded: identity.classCode >> 8)
        bytes[0x0B] = UInt8(truncatingIfNeeded: identity.classCode >> 16)
        put16(PCIConfigOffset.subsystemVendorID, identity.subsystemVendorID)
        put16(PCIConfigOffset.subsystemID, identity.subsystemID)
    }

    // MARK: Identity and header

    public var vendorID: UInt16 { get16(PCIConfigOffset.vendorID) }
    public var deviceID: UInt16 { get16(PCIConfigOffset.deviceID) }
    public var command: PCICommand { PCICommand(rawValue: get16(PCIConfigOffset.command)) }
    public var busMasterEnabled: Bool { command.contains(.busMaster) }
    public var interruptLine: UInt8 {
        get { bytes[PCIConfigOffset.interruptLine] }
        set { bytes[PCIConfigOffset.interruptLine] = newValue }
    }
    /// 0 = none, 1 = INTA … 4 = INTD.
    public var interruptPin: UInt8 {
        get { bytes[PCIConfigOffset.interruptPin] }
        set { bytes[PCIConfigOffset.interruptPin] = min(newValue, 4) }
    }

    /// Marks the function as part of a multi-function device (header type bit 7).
    func setMultiFunction() { bytes[PCIConfigOffset.headerType] |= 0x80 }

    /// Sets the status register's "interrupt status" bit (§6.2.3 bit 3) that mirrors INTx.
    func setInterruptStatus(_ on: Bool) {
        if on { bytes[0x06] |= 0x08 } else { bytes[0x06] &= ~0x08 }
    }

    // MARK: BARs

    /// Declares BAR `index`. Sizes are powers of two (memory ≥ 16 bytes, I/O ≥ 4 bytes);
    /// a 64-bit BAR uses `index` and `index + 1`. Programming errors in a device's own
    /// declaration (not guest input) are reported by returning false.
    @discardableResult
    public func declareBAR(_ index: Int, _ kind: PCIBARKind) -> Bool {
        let minimum: UInt64 = kind.isIO ? 4 : 16
        let size = max(kind.size, minimum)
        guard (0 ..< 6).contains(index), size.nonzeroBitCount == 1,
              !kind.is64Bit || (index < 5 && bars[index + 1] == nil), bars[index] == nil,
              index == 0 || bars[index - 1]?.is64Bit != true // the upper half of a 64-bit BAR
        else { return false }
        let k: PCIBARKind = switch kind {
        case let .memory32(_, p): .memory32(size: size, prefetchable: p)
        case let .memory64(_, p): .memory64(size: size, prefetchable: p)
        case .io: .io(size: size)
        }
        bars[index] = k
        let off = PCIConfigOffset.bar0 + 4 * index
        put32(off, k.flagBits)
        setMask(off, width: 4, UInt32(truncatingIfNeeded: ~(size - 1)) & ~UInt32(k.isIO ? 0x3 : 0xF))
        if k.is64Bit {
            setMask(off + 4, width: 4, UInt32(truncatingIfNeeded: ~(size - 1) >> 32))
        }
        return true
    }

    /// The address BAR `index` is programmed to (nil if not declared). Includes the
    /// all-ones sizing value while a sizing sequence is in progress; the bus ignores
    /// a BAR whose range would not fit its window.
    public func barAddress(_ index: Int) -> UInt64? {
        guard (0 ..< 6).contains(index), let kind = bars[index] else { return nil }
        let off = PCIConfigOffset.bar0 + 4 * index
        let low = UInt64(get32(off)) & (kind.isIO ? ~UInt64(0x3) : ~UInt64(0xF))
        guard kind.is64Bit else { return low & 0xFFFF_FFFF }
        return low | UInt64(get32(off + 4)) << 32
    }

    /// Programs BAR `index` as firmware would.
    public func setBARAddress(_ index: Int, _ address: UInt64) {
        guard (0 ..< 6).contains(index), let kind = bars[index] else { return }
        let off = PCIConfigOffset.bar0 + 4 * index
        put32(off, UInt32(truncatingIfNeeded: address) & UInt32(truncatingIfNeeded: ~(kind.size - 1)) | kind.flagBits)
        if kind.is64Bit { put32(off + 4, UInt32(truncatingIfNeeded: address >> 32)) }
        onDecodeChange?()
    }

    // MARK: Capabilities

    /// Appends a capability with `body` (the bytes after ID and next pointer) and a
    /// write mask for those bytes. Returns the capability's offset, or nil when full.
    public func addCapability(id: UInt8, body: [UInt8], writeMask bodyMask: [UInt8]? = nil) -> Int? {
        let offset = nextCapability
        let length = 2 + body.count
        guard offset + length <= PCIConfigSpace.size else { return nil }
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (i, b) in body.enumerated() {
            bytes[offset + 2 + i] = b
            writeMask[offset + 2 + i] = bodyMask.flatMap { i < $0.count ? $0[i] : nil } ?? 0
        }
        // Link it at the end of the list.
        if bytes[PCIConfigOffset.capabilitiesPointer] == 0 {
            bytes[PCIConfigOffset.capabilitiesPointer] = UInt8(offset)
            bytes[0x06] |= 0x10 // status: capabilities list
        } else {
            var p = Int(bytes[PCIConfigOffset.capabilitiesPointer])
            while bytes[p + 1] != 0 { p = Int(bytes[p + 1]) }
            bytes[p + 1] = UInt8(offset)
        }
        nextCapability = (offset + length + 3) & ~3
        return offset
    }

    func onCapabilityWrite(_ range: Range<Int>, _ hook: @escaping (_ offset: Int, _ size: Int) -> Void) {
        capabilityWriteHooks.append((range, hook))
    }

    // MARK: Guest access

    /// A config read of 1, 2 or 4 bytes; offsets that don't fit read as all ones.
    public func read(offset: Int, size: Int) -> UInt32 {
        guard [1, 2, 4].contains(size), offset >= 0, offset <= PCIConfigSpace.size - size else { return 0xFFFF_FFFF >> (32 - 8 * UInt32(min(max(size, 1), 4))) }
        var v: UInt32 = 0
        for i in 0 ..< size { v |= UInt32(bytes[offset + i]) << (8 * i) }
        return v
    }

    /// A config write of 1, 2 or 4 bytes, applying write masks and RW1C bits.
    public func write(offset: Int, size: Int, value: UInt32) {
        guard [1, 2, 4].contains(size), offset >= 0, offset <= PCIConfigSpace.size - size else { return }
        let before = (get16(PCIConfigOffset.command), (0 ..< 6).map { barAddress($0) })
        for i in 0 ..< size {
            let o = offset + i
            let b = UInt8(truncatingIfNeeded: value >> (8 * i))
            bytes[o] = (bytes[o] & ~writeMask[o]) | (b & writeMask[o])
            bytes[o] &= ~(b & clearMask[o])
        }
        let range = offset ..< offset + size
        for h in capabilityWriteHooks where h.range.overlaps(range) { h.hook(offset, size) }
        let after = (get16(PCIConfigOffset.command), (0 ..< 6).map { barAddress($0) })
        if before.0 != after.0 || before.1 != after.1 { onDecodeChange?() }
    }

    // MARK: Raw helpers for the core

    func get16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
    func get32(_ o: Int) -> UInt32 { UInt32(get16(o)) | UInt32(get16(o + 2)) << 16 }
    func put16(_ o: Int, _ v: UInt16) { bytes[o] = UInt8(truncatingIfNeeded: v); bytes[o + 1] = UInt8(truncatingIfNeeded: v >> 8) }
    func put32(_ o: Int, _ v: UInt32) { put16(o, UInt16(truncatingIfNeeded: v)); put16(o + 2, UInt16(truncatingIfNeeded: v >> 16)) }
    func setMask(_ o: Int, width: Int, _ mask: some FixedWidthInteger) {
        for i in 0 ..< width { writeMask[o + i] = UInt8(truncatingIfNeeded: mask >> (8 * i)) }
    }
}
