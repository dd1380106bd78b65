import VMMCore

/// The Intel MultiProcessor Specification 1.4 tables (chapter 4): how a guest without ACPI
/// learns its CPUs, the IOAPIC, and where each ISA IRQ and PCI INTx pin arrives.
public struct MPTable: Sendable {
    public struct PCIInterrupt: Sendable, Equatable {
        public let slot: Int
        /// 1 = INTA … 4 = INTD.
        public let pin: Int
        /// IOAPIC input it is wired to.
        public let ioapicPin: Int
        public init(slot: Int, pin: Int, ioapicPin: Int) { self.slot = slot; self.pin = pin; self.ioapicPin = ioapicPin }
    }

    public let cpus: Int
    public let pciInterrupts: [PCIInterrupt]

    static let pciBusID: UInt8 = 0
    static let isaBusID: UInt8 = 1

    public init(cpus: Int, pciInterrupts: [PCIInterrupt]) {
        self.cpus = cpus
        self.pciInterrupts = pciInterrupts
    }

    var ioapicID: UInt8 { UInt8(truncatingIfNeeded: cpus) }

    /// The floating pointer (16 bytes) followed by the configuration table.
    public func bytes(at address: UInt64) -> [UInt8] {
        let table = configurationTable()
        var floating = Array("_MP_".utf8)
        floating += le(UInt32(truncatingIfNeeded: address + 16)) // physical address of the table
        floating += [1, 4, 0, 0, 0, 0, 0, 0] // length in paragraphs, spec 1.4, checksum, no default config
        floating[10] = checksum(floating)
        return floating + table
    }

    private func configurationTable() -> [UInt8] {
        var entries: [UInt8] = []
        var count: UInt16 = 0
        for id in 0 ..< cpus { // processor entries (§4.3.1)
            entries += [0, UInt8(truncatingIfNeeded: id), 0x14, id == 0 ? 0x03 : 0x01] // type, LAPIC id, version, EN|BP
            entries += le(UInt32(0x600)) + le(UInt32(0x201)) + [UInt8](repeating: 0, count: 8) // signature, features (FPU, APIC)
            count += 1
        }
        for (id, name) in [(Self.pciBusID, "PCI   "), (Self.isaBusID, "ISA   ")] { // bus entries (§4.3.2)
            entries += [1, id] + Array(name.utf8)
            count += 1
        }
        entries += [2, ioapicID, 0x11, 0x01] + le(UInt32(PlatformLayout.ioapicBase)) // IOAPIC (§4.3.3)
        count += 1
        // ISA IRQs (§4.3.4): IRQ 0 through the 8259 as ExtINT on pin 0, IRQs 1–15 on their pins, bus-default polarity.
        entries += interrupt(type: 3, flags: 0, bus: Self.isaBusID, irq: 0, pin: 0)
        count += 1
        for irq in UInt8(1) ..< 16 {
            entries += interrupt(type: 0, flags: 0, bus: Self.isaBusID, irq: irq, pin: irq)
            count += 1
        }
        // PCI INTx: source IRQ = slot << 2 | (pin - 1) (§D.3), level-triggered, active high.
        for p in pciInterrupts {
            let irq = UInt8(truncatingIfNeeded: (p.slot << 2) | (p.pin - 1))
            entries += interrupt(type: 0, flags: 0x0D, bus: Self.pciBusID, irq: irq, pin: UInt8(truncatingIfNeeded: p.ioapicPin))
            count += 1
        }
        // Local interrupts (§4.3.5): LINT0 ExtINT, LINT1 NMI on every LAPIC.
        entries += [4, 3, 0, 0, Self.isaBusID, 0, 0xFF, 0]
        entries += [4, 1, 0, 0, Self.isaBusID, 0, 0xFF, 1]
        count += 2

        var header = Array("PCMP".utf8)
        header += le(UInt16(truncatingIfNeeded: 44 + entries.count)) + [4, 0] // length, spec rev, checksum
        header += Array("SWIFTVMM".utf8) + Array("SWIFTVMM 1.0".utf8) // OEM id (8), product id (12)
        header += le(UInt32(0)) + le(UInt16(0)) + le(count) // OEM table, its size, entry count
        header += le(UInt32(PlatformLayout.lapicBase)) + le(UInt16(0)) + [0, 0] // LAPIC, extended length/checksum, reserved
        var table = header + entries
        table[7] = checksum(table)
        return table
    }

    private func interrupt(type: UInt8, flags: UInt16, bus: UInt8, irq: UInt8, pin: UInt8) -> [UInt8] {
        [3, type] + le(flags) + [bus, irq, ioapicID, pin]
    }

    private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0 ..< MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }

    /// The byte that makes the sum of all bytes zero.
    private func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    func write(to memory: GuestMemory) throws(GuestMemoryError) {
        try memory.writeBytes(bytes(at: PlatformLayout.mpTable), at: GuestAddress(PlatformLayout.mpTable))
    }
}
