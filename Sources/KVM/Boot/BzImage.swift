import VMMCore

/// A Linux bzImage booted through the 64-bit entry of the x86 boot protocol
/// (Documentation/arch/x86/boot.rst): setup header validated field by field, the
/// protected-mode kernel loaded at its preferred address, `boot_params` (the zero page)
/// with e820 map, command line and initrd, long mode on identity page tables.
public struct BzImage: Sendable {
    let kernelRange: Range<Int>
    let header: Range<Int>
    let loadAddress: UInt64
    let initSize: UInt64
    /// Where the kernel runs and decompresses into `initSize` bytes from: a relocatable
    /// kernel loaded below `pref_address` moves itself there first (boot.rst: "if
    /// (load_address < pref_address) load_address = pref_address", then aligned; Linux's
    /// compressed/head_64.S takes LOAD_PHYSICAL_ADDR as its floor). Nothing else may lie
    /// in [runtimeAddress, runtimeAddress + initSize): not the initrd.
    let runtimeAddress: UInt64
    let commandLineLimit: Int
    let initrdAddressMax: UInt64

    /// Offsets in the setup header (boot.rst, "The real-mode kernel header").
    enum Field {
        static let setupSects: UInt64 = 0x1F1
        static let bootFlag: UInt64 = 0x1FE
        static let jump: UInt64 = 0x200
        static let magic: UInt64 = 0x202
        static let version: UInt64 = 0x206
        static let typeOfLoader: UInt64 = 0x210
        static let loadFlags: UInt64 = 0x211
        static let ramdiskImage: UInt64 = 0x218
        static let ramdiskSize: UInt64 = 0x21C
        static let cmdLinePtr: UInt64 = 0x228
        static let initrdAddrMax: UInt64 = 0x22C
        static let kernelAlignment: UInt64 = 0x230
        static let relocatable: UInt64 = 0x234
        static let xloadFlags: UInt64 = 0x236
        static let cmdlineSize: UInt64 = 0x238
        static let prefAddress: UInt64 = 0x258
        static let initSize: UInt64 = 0x260
        static let e820Entries: UInt64 = 0x1E8
        static let e820Table: UInt64 = 0x2D0
    }

    static func parse(_ r: ByteReader, path: String) throws(BootError) -> BzImage {
        func bad(_ reason: String) -> BootError { .badBzImage(path: path, reason: reason) }
        guard r.bytes.count >= 0x268 else { throw bad("file too short for a setup header") }
        guard r.u16(Field.bootFlag) == 0xAA55 else { throw bad("boot flag is not 0xAA55") }
        guard r.u32(Field.magic) == 0x5372_6448 else { throw bad("no \"HdrS\" signature") }
        guard let version = r.u16(Field.version), version >= 0x020C else {
            throw bad("boot protocol version \(String(r.u16(Field.version) ?? 0, radix: 16)) is older than 2.12 (no 64-bit entry)")
        }
        guard let loadFlags = r.u8(Field.loadFlags), loadFlags & 0x01 != 0 else { throw bad("not loaded high (LOADED_HIGH clear)") }
        guard let xloadFlags = r.u16(Field.xloadFlags), xloadFlags & 0x01 != 0 else { throw bad("no 64-bit entry point (XLF_KERNEL_64 clear)") }
        guard let sects = r.u8(Field.setupSects), let jumpLength = r.u8(Field.jump + 1),
              let alignment = r.u32(Field.kernelAlignment), let relocatable = r.u8(Field.relocatable),
              let cmdlineSize = r.u32(Field.cmdlineSize), let initrdMax = r.u32(Field.initrdAddrMax),
              let pref = r.u64(Field.prefAddress), let initSize = r.u32(Field.initSize)
        else { throw bad("truncated setup header") }
        let setupSize = (UInt64(sects == 0 ? 4 : sects) + 1) * 512
        guard setupSize < UInt64(r.bytes.count) else { throw bad("setup code (\(setupSize) bytes) is longer than the file") }
        let headerEnd = 0x202 + UInt64(jumpLength)
        guard headerEnd <= 0x290, headerEnd <= UInt64(r.bytes.count) else { throw bad("setup header length \(jumpLength) out of range") }
        guard alignment.nonzeroBitCount == 1 else { throw bad("kernel alignment 0x\(String(alignment, radix: 16)) is not a power of two") }
        // Relocatable kernels go at 1 MiB rounded up to their alignment, others where they asked.
        let load: UInt64, runtime: UInt64
        let a = UInt64(alignment)
        if relocatable != 0 {
            load = (PlatformLayout.kernelMinimum + a - 1) & ~(a - 1)
            let (top, wraps) = max(load, pref).addingReportingOverflow(a - 1)
            guard !wraps else { throw bad("preferred address 0x\(String(pref, radix: 16)) out of range") }
            runtime = top & ~(a - 1)
        } else {
            load = pref
            runtime = pref
        }
        guard load >= PlatformLayout.kernelMinimum, load < PCMemoryMap.lowRAMEnd else {
            throw bad("load address 0x\(String(load, radix: 16)) is outside low RAM")
        }
        let kernelSize = UInt64(r.bytes.count) - setupSize
        let size = max(UInt64(initSize), kernelSize)
        guard runtime < PCMemoryMap.lowRAMEnd, size <= PCMemoryMap.lowRAMEnd - runtime else {
            throw bad("the kernel runs at 0x\(String(runtime, radix: 16)) with 0x\(String(size, radix: 16)) bytes, past low RAM")
        }
        return BzImage(kernelRange: Int(setupSize) ..< r.bytes.count, header: Int(Field.setupSects) ..< Int(headerEnd),
                       loadAddress: load, initSize: size, runtimeAddress: runtime,
                       commandLineLimit: Int(min(cmdlineSize, UInt32(PlatformLayout.commandLineMax))),
                       initrdAddressMax: UInt64(initrdMax))
    }

    func load(into memory: GuestMemory, bytes: [UInt8], initrd: [UInt8]?, cmdline: String, path: String) throws(BootError) -> BootCPUState {
        let end = max(loadAddress, runtimeAddress) + initSize // all < 4 GiB (parse): cannot overflow
        do {
            let dst = try memory.hostRange(GuestAddress(loadAddress), length: initSize)
            dst.initializeMemory(as: UInt8.self, repeating: 0)
            bytes.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[kernelRange])) }
            _ = try memory.hostRange(GuestAddress(runtimeAddress), length: initSize)   // where it will run: RAM too
        } catch {
            throw .doesNotFit(what: "kernel (\(path))", size: end - loadAddress)
        }
        let cmdlineAddress = try PlatformLayout.writeCommandLine(memory, cmdline, limit: commandLineLimit)
        var initrdPlacement: (UInt64, UInt64)?
        if let initrd {
            let address = try PlatformLayout.placeInitrd(memory, initrd, floor: end, limit: initrdAddressMax &+ 1)
            initrdPlacement = (address, UInt64(initrd.count))
        }
        do {
            let zp = PlatformLayout.zeroPage
            try memory.fill(GuestAddress(zp), length: 0x1000, with: 0)
            try memory.writeBytes(Array(bytes[header]), at: GuestAddress(zp + Field.setupSects))
            try memory.store(UInt8(0xFF), at: GuestAddress(zp + Field.typeOfLoader)) // undefined loader
            try memory.store(UInt32(cmdlineAddress), at: GuestAddress(zp + Field.cmdLinePtr))
            if let (address, size) = initrdPlacement {
                try memory.store(UInt32(truncatingIfNeeded: address), at: GuestAddress(zp + Field.ramdiskImage))
                try memory.store(UInt32(truncatingIfNeeded: size), at: GuestAddress(zp + Field.ramdiskSize))
            }
            let map = PlatformLayout.memoryMap(memory).prefix(128) // E820_MAX_ENTRIES_ZEROPAGE
            try memory.store(UInt8(map.count), at: GuestAddress(zp + Field.e820Entries))
            for (i, e) in map.enumerated() {
                let at = zp + Field.e820Table + UInt64(i) * 20
                try memory.store(e.address, at: GuestAddress(at))
                try memory.store(e.size, at: GuestAddress(at + 8))
                try memory.store(e.kind.rawValue, at: GuestAddress(at + 16))
            }
            let gdt = try PlatformLayout.writeGDT(memory, longMode: true)
            let root = try PlatformLayout.writeIdentityPageTables(memory)
            // The 64-bit entry is 0x200 past the start of the protected-mode kernel.
            return BootCPUState(mode: .long64(pageTableRoot: root), entry: loadAddress + 0x200, rsi: zp,
                                gdtBase: gdt.base, gdtLimit: gdt.limit)
        } catch {
            throw .doesNotFit(what: "boot parameters", size: 0x1000)
        }
    }
}
