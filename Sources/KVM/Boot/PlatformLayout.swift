import VMMCore

/// Fixed guest-physical addresses of what the VMM writes before the first instruction
/// (documented in Docs/platform.md). All of it is below 1 MiB; kernels load at or above 1 MiB.
public enum PlatformLayout {
    public static let gdt: UInt64 = 0x500
    public static let pvhStartInfo: UInt64 = 0x6000
    public static let pvhModules: UInt64 = 0x6040
    public static let pvhMemoryMap: UInt64 = 0x6100
    public static let zeroPage: UInt64 = 0x7000
    /// PML4, PDPT and four page directories identity-mapping 4 GiB with 2 MiB pages.
    public static let pageTables: UInt64 = 0x9000
    public static let commandLine: UInt64 = 0x2_0000
    public static let commandLineMax = 0x1_0000 - 1
    /// End of conventional RAM reported to the guest (the EBDA/VGA hole starts here).
    public static let conventionalEnd: UInt64 = 0xA_0000
    /// MP floating pointer and configuration table, in the BIOS area Linux scans.
    public static let mpTable: UInt64 = 0xF_0000
    public static let biosArea: Range<UInt64> = 0xF_0000 ..< 0x10_0000
    public static let kernelMinimum: UInt64 = 0x10_0000
    public static let ioapicBase: UInt64 = 0xFEC0_0000
    public static let lapicBase: UInt64 = 0xFEE0_0000

    /// Guest RAM sizes this machine accepts.
    public static let minimumMemory: UInt64 = 16 << 20
    /// RAM above 4 GiB must end below the 64-bit PCI window.
    public static let maximumMemory: UInt64 = PCMemoryMap.lowRAMEnd + (PCMemoryMap.pciMMIO64.lowerBound - PCMemoryMap.highRAMStart)

    public struct MemoryMapEntry: Sendable, Equatable {
        public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2 }
        public let address: UInt64
        public let size: UInt64
        public let kind: Kind
    }

    /// The e820 / PVH memory map: conventional RAM, the BIOS area reserved (it holds the MP
    /// table), RAM from 1 MiB, and RAM above 4 GiB.
    public static func memoryMap(_ memory: GuestMemory) -> [MemoryMapEntry] {
        var map: [MemoryMapEntry] = []
        for region in memory.regions {
            let base = region.base.raw, end = base &+ region.size
            if base < kernelMinimum {
                map.append(.init(address: base, size: min(end, conventionalEnd) - base, kind: .ram))
                map.append(.init(address: biosArea.lowerBound, size: UInt64(biosArea.count), kind: .reserved))
                if end > kernelMinimum { map.append(.init(address: kernelMinimum, size: end - kernelMinimum, kind: .ram)) }
            } else {
                map.append(.init(address: base, size: region.size, kind: .ram))
            }
        }
        return map
    }

    /// Highest RAM address below 4 GiB, exclusive (where the initrd goes, at the top).
    static func lowRAMTop(_ memory: GuestMemory) -> UInt64 {
        memory.regions.filter { $0.base.raw < PCMemoryMap.highRAMStart }.map { $0.base.raw &+ $0.size }.max() ?? 0
    }

    /// GDT with 0x10 code (32- or 64-bit), 0x18 flat data and 0x20 a TSS descriptor (SDM vol. 3A §3.4.5).
    static func writeGDT(_ memory: GuestMemory, longMode: Bool) throws(GuestMemoryError) -> (base: UInt64, limit: UInt16) {
        let entries: [UInt64] = [
            0, 0,
            longMode ? 0x00AF_9B00_0000_FFFF : 0x00CF_9B00_0000_FFFF, // code: present, ring 0, exec/read, 4 GiB
            0x00CF_9300_0000_FFFF, // data: present, ring 0, read/write, 4 GiB
            0x0000_8B00_0000_0067, // TSS: present, busy 32-bit TSS, limit 0x67
        ]
        for (i, e) in entries.enumerated() { try memory.store(e, at: GuestAddress(gdt + UInt64(i * 8))) }
        return (gdt, UInt16(entries.count * 8 - 1))
    }

    /// Identity map of the low 4 GiB with 2 MiB pages; returns the PML4 address.
    static func writeIdentityPageTables(_ memory: GuestMemory) throws(GuestMemoryError) -> UInt64 {
        let pml4 = pageTables, pdpt = pageTables + 0x1000, pd = pageTables + 0x2000
        try memory.fill(GuestAddress(pml4), length: 0x6000, with: 0)
        try memory.store(pdpt | 0x3, at: GuestAddress(pml4)) // present, writable
        for i in 0 ..< UInt64(4) {
            try memory.store((pd + i * 0x1000) | 0x3, at: GuestAddress(pdpt + i * 8))
            for j in 0 ..< UInt64(512) {
                let physical = (i << 30) | (j << 21)
                try memory.store(physical | 0x83, at: GuestAddress(pd + i * 0x1000 + j * 8)) // present, writable, 2 MiB
            }
        }
        return pml4
    }

    /// Writes the NUL-terminated command line.
    static func writeCommandLine(_ memory: GuestMemory, _ cmdline: String, limit: Int) throws(BootError) -> UInt64 {
        let bytes = Array(cmdline.utf8)
        guard bytes.count <= min(limit, commandLineMax) else {
            throw .commandLineTooLong(length: bytes.count, limit: min(limit, commandLineMax))
        }
        do {
            try memory.writeBytes(bytes + [0], at: GuestAddress(commandLine))
        } catch {
            throw .doesNotFit(what: "kernel command line", size: UInt64(bytes.count))
        }
        return commandLine
    }

    /// Places the initrd at the top of RAM below `limit` (page aligned) and above `floor`.
    static func placeInitrd(_ memory: GuestMemory, _ initrd: [UInt8], floor: UInt64, limit: UInt64) throws(BootError) -> UInt64 {
        let size = UInt64(initrd.count)
        let top = min(lowRAMTop(memory), limit)
        guard size <= top else { throw .doesNotFit(what: "initrd", size: size) }
        let address = (top - size) & ~0xFFF
        guard address >= floor else { throw .doesNotFit(what: "initrd", size: size) }
        do {
            try memory.writeBytes(initrd, at: GuestAddress(address))
        } catch {
            throw .doesNotFit(what: "initrd", size: size)
        }
        return address
    }
}
