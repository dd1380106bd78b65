import VMMCore

/// Configuration mechanism #1 as a guest uses it: CONFIG_ADDRESS at 0xCF8, data at 0xCFC.
public struct ConfigPorts: Sendable {
    public let pio: AddressSpace

    public init(pio: AddressSpace) { self.pio = pio }

    private func select(slot: Int, function: Int, offset: Int) {
        let address = UInt32(0x8000_0000) | UInt32(slot & 0x1F) << 11 | UInt32(function & 7) << 8 | UInt32(offset & 0xFC)
        pio.write(0xCF8, size: 4, value: UInt64(address))
    }

    public func read(slot: Int, function: Int = 0, offset: Int, size: Int = 4) -> UInt32 {
        select(slot: slot, function: function, offset: offset)
        return UInt32(truncatingIfNeeded: pio.read(0xCFC + UInt64(offset & 3), size: size))
    }

    public func write(slot: Int, function: Int = 0, offset: Int, size: Int = 4, value: UInt32) {
        select(slot: slot, function: function, offset: offset)
        pio.write(0xCFC + UInt64(offset & 3), size: size, value: UInt64(value))
    }
}

/// What firmware does before an OS runs, done only through config cycles: find the
/// functions, size each BAR (write all ones, read back the mask), place it, enable decode.
public struct Firmware: Sendable {
    public struct FoundFunction: Equatable, Sendable {
        public let slot: Int, function: Int
        public let vendorID: UInt16, deviceID: UInt16
        public let classCode: UInt32
    }

    public let ports: ConfigPorts
    public init(ports: ConfigPorts) { self.ports = ports }

    /// Scans bus 0 like Linux's pci_scan_slot: vendor ID 0xFFFF means nothing there;
    /// functions 1-7 are probed only when function 0's header type has bit 7 set.
    public func enumerate() -> [FoundFunction] {
        var found: [FoundFunction] = []
        for slot in 0 ..< 32 {
            for function in 0 ..< 8 {
                let id = ports.read(slot: slot, function: function, offset: 0)
                guard id & 0xFFFF != 0xFFFF else {
                    if function == 0 { break } else { continue }
                }
                let cls = ports.read(slot: slot, function: function, offset: 8) >> 8
                found.append(FoundFunction(slot: slot, function: function, vendorID: UInt16(id & 0xFFFF),
                                           deviceID: UInt16(id >> 16), classCode: cls))
                if function == 0 && ports.read(slot: slot, offset: 0x0E, size: 1) & 0x80 == 0 { break }
            }
        }
        return found
    }

    /// The size BAR `bar` decodes, found by the sizing protocol; nil if unimplemented.
    /// Restores the original value afterwards. For 64-bit BARs reads both halves.
    public func sizeBAR(slot: Int, bar: Int) -> (size: UInt64, io: Bool, is64: Bool)? {
        let off = 0x10 + 4 * bar
        let original = ports.read(slot: slot, offset: off)
        ports.write(slot: slot, offset: off, value: 0xFFFF_FFFF)
        let mask = ports.read(slot: slot, offset: off)
        ports.write(slot: slot, offset: off, value: original)
        guard mask != 0 else { return nil }
        if mask & 1 == 1 {
            let m = mask & ~0x3
            return (UInt64(~m &+ 1) & 0xFFFF, true, false)
        }
        let is64 = (mask >> 1) & 3 == 2
        var full = UInt64(mask & ~0xF)
        if is64 {
            let hiOriginal = ports.read(slot: slot, offset: off + 4)
            ports.write(slot: slot, offset: off + 4, value: 0xFFFF_FFFF)
            full |= UInt64(ports.read(slot: slot, offset: off + 4)) << 32
            ports.write(slot: slot, offset: off + 4, value: hiOriginal)
        } else {
            full |= 0xFFFF_FFFF_0000_0000
        }
        return (~full &+ 1, false, is64)
    }

    /// Sizes and places every BAR of `slot` (I/O from `io`, memory from `mmio`), then
    /// turns on I/O and memory decode and bus mastering. Returns each BAR's address.
    @discardableResult
    public func configure(slot: Int, mmio: inout UInt64, io: inout UInt64) -> [Int: UInt64] {
        var placed: [Int: UInt64] = [:]
        var bar = 0
        while bar < 6 {
            guard let (size, isIO, is64) = sizeBAR(slot: slot, bar: bar) else { bar += 1; continue }
            let off = 0x10 + 4 * bar
            if isIO {
                let a = (io + size - 1) & ~(size - 1)
                io = a + size
                ports.write(slot: slot, offset: off, value: UInt32(a))
                placed[bar] = a
            } else {
                let a = (mmio + size - 1) & ~(size - 1)
                mmio = a + size
                ports.write(slot: slot, offset: off, value: UInt32(truncatingIfNeeded: a))
                if is64 { ports.write(slot: slot, offset: off + 4, value: UInt32(truncatingIfNeeded: a >> 32)) }
                placed[bar] = a
            }
            bar += is64 ? 2 : 1
        }
        let cmd = ports.read(slot: slot, offset: 4, size: 2)
        ports.write(slot: slot, offset: 4, size: 2, value: cmd | 0x7)
        return placed
    }
}
