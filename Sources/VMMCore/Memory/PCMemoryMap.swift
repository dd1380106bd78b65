/// Where things live in a PC guest's physical address space (shared by the KVM
/// platform, the test kit and the qtest machine so they agree).
public enum PCMemoryMap {
    /// RAM below 4 GiB stops here; the 32-bit PCI MMIO window, IOAPIC and LAPIC follow.
    public static let lowRAMEnd: UInt64 = 0xC000_0000
    /// 32-bit PCI MMIO window for BARs (below the IOAPIC at 0xFEC0_0000).
    public static let pciMMIO32: Range<UInt64> = 0xC000_0000 ..< 0xFE00_0000
    /// 64-bit PCI MMIO window, above any RAM this VMM creates (1 TiB).
    public static let pciMMIO64: Range<UInt64> = 0x100_0000_0000 ..< 0x200_0000_0000
    /// PCI I/O port window for I/O BARs.
    public static let pciIO: Range<UInt64> = 0xC000 ..< 0x1_0000
    public static let highRAMStart: UInt64 = 0x1_0000_0000

    /// RAM regions for `size` bytes: below the hole, and the remainder above 4 GiB.
    public static func ramLayout(size: UInt64) -> [(base: UInt64, size: UInt64)] {
        if size <= lowRAMEnd { return [(0, size)] }
        return [(0, lowRAMEnd), (highRAMStart, size - lowRAMEnd)]
    }
}
