import VMMCore

/// An ELF kernel with a PVH entry point (Xen's `hvm_start_info` boot ABI, as Linux's
/// `vmlinux` carries it): PT_LOAD segments loaded at their physical addresses, entered in
/// 32-bit protected mode with EBX pointing at `hvm_start_info`.
public struct PVHImage: Sendable {
    public struct Segment: Sendable {
        let fileRange: Range<Int>
        let physicalAddress: UInt64
        let memorySize: UInt64
    }
    public let segments: [Segment]
    public let entry: UInt32
    /// One past the highest byte any segment occupies.
    public let end: UInt64

    static let xenNoteName: [UInt8] = Array("Xen".utf8) + [0]
    static let xenElfNotePhys32Entry: UInt32 = 18

    /// Parses and validates ELF32 or ELF64 (little-endian x86) with every offset and size
    /// checked against the file and for overflow.
    static func parse(_ r: ByteReader, path: String) throws(BootError) -> PVHImage {
        func bad(_ reason: String) -> BootError { .badELF(path: path, reason: reason) }
        guard let cls = r.u8(4), cls == 1 || cls == 2 else { throw bad("unknown ELF class") }
        let is64 = cls == 2
        guard r.u8(5) == 1 else { throw bad("not little-endian") }
        guard let machine = r.u16(18), machine == (is64 ? 0x3E : 0x03) else { throw bad("not an x86 ELF") }
        let phoff: UInt64?, phentsize: UInt16?, phnum: UInt16?
        if is64 {
            phoff = r.u64(32); phentsize = r.u16(54); phnum = r.u16(56)
        } else {
            phoff = r.u32(28).map(UInt64.init); phentsize = r.u16(42); phnum = r.u16(44)
        }
        guard let phoff, let phentsize, let phnum else { throw bad("truncated ELF header") }
        guard phentsize >= (is64 ? 56 : 32) else { throw bad("program header size \(phentsize) too small") }
        guard phnum > 0 else { throw bad("no program headers") }
        guard r.range(phoff, UInt64(phentsize) * UInt64(phnum)) != nil else { throw bad("program headers lie outside the file") }

        var segments: [Segment] = []
        var entry: UInt32?
        var end: UInt64 = 0
        // Every PT_NOTE may cover the same megabytes: the walk over all of them stops
        // after the file's size in bytes, not after phnum × the file (65,535 notes over
        // 1 MB of zeroes took 45 minutes).
        var noteBudget = UInt64(r.bytes.count)
        for i in 0 ..< UInt64(phnum) {
            let h = phoff + i * UInt64(phentsize) // in range: checked above
            guard let type = r.u32(h) else { throw bad("truncated program header") }
            let offset, paddr, filesz, memsz: UInt64?
            if is64 {
                offset = r.u64(h + 8); paddr = r.u64(h + 24); filesz = r.u64(h + 32); memsz = r.u64(h + 40)
            } else {
                offset = r.u32(h + 4).map(UInt64.init); paddr = r.u32(h + 12).map(UInt64.init)
                filesz = r.u32(h + 16).map(UInt64.init); memsz = r.u32(h + 20).map(UInt64.init)
            }
            guard let offset, let paddr, let filesz, let memsz else { throw bad("truncated program header") }
            guard let fileRange = r.range(offset, filesz) else { throw bad("segment \(i) lies outside the file") }
            switch type {
            case 1: // PT_LOAD
                guard filesz <= memsz else { throw bad("segment \(i) file size exceeds memory size") }
                guard memsz > 0 else { continue }
                guard paddr >= PlatformLayout.kernelMinimum else {
                    throw bad("segment \(i) at 0x\(String(paddr, radix: 16)) is below 1 MiB")
                }
                let (segEnd, overflow) = paddr.addingReportingOverflow(memsz)
                guard !overflow else { throw bad("segment \(i) wraps the address space") }
                segments.append(Segment(fileRange: fileRange, physicalAddress: paddr, memorySize: memsz))
                end = max(end, segEnd)
            case 4: // PT_NOTE
                if entry == nil { entry = try findPVHEntry(r, notes: fileRange, budget: &noteBudget, path: path) }
            default:
                break
            }
        }
        guard !segments.isEmpty else { throw bad("no loadable segments") }
        // Overlapping segments would overwrite each other (a later one's zero fill over an
        // earlier one's bytes); a linker never makes them. Apart, they also bound the
        // loading work by the guest's memory.
        let ordered = segments.sorted { $0.physicalAddress < $1.physicalAddress }
        for (a, b) in zip(ordered, ordered.dropFirst()) where a.physicalAddress + a.memorySize > b.physicalAddress {
            throw bad("segments at 0x\(String(a.physicalAddress, radix: 16)) and 0x\(String(b.physicalAddress, radix: 16)) overlap")
        }
        guard let entry else { throw .noPVHEntry(path: path) }
        return PVHImage(segments: segments, entry: entry, end: end)
    }

    /// Walks ELF notes (namesz, descsz, type, name, desc; each padded to 4 bytes).
    private static func findPVHEntry(_ r: ByteReader, notes: Range<Int>, budget: inout UInt64, path: String) throws(BootError) -> UInt32? {
        var at = UInt64(notes.lowerBound)
        let end = UInt64(notes.upperBound)
        while at + 12 <= end, budget >= 12 {
            guard let namesz = r.u32(at), let descsz = r.u32(at + 4), let type = r.u32(at + 8) else { return nil }
            let nameAt = at + 12
            let descAt = nameAt + ((UInt64(namesz) + 3) & ~3)
            let next = descAt + ((UInt64(descsz) + 3) & ~3)
            guard next <= end else { return nil }
            if type == xenElfNotePhys32Entry, let nr = r.range(nameAt, UInt64(namesz)),
               Array(r.bytes[nr]) == xenNoteName {
                let value: UInt64? = descsz >= 8 ? r.u64(descAt) : (descsz >= 4 ? r.u32(descAt).map(UInt64.init) : nil)
                guard let value else { throw .badELF(path: path, reason: "PVH entry note has \(descsz) bytes") }
                guard value < 0x1_0000_0000 else {
                    throw .badELF(path: path, reason: "PVH entry 0x\(String(value, radix: 16)) is above 4 GiB")
                }
                return UInt32(value)
            }
            budget -= min(budget, next - at)
            at = next
        }
        return nil
    }

    /// Loads the segments, writes `hvm_start_info` (version 1, with the memory map), the
    /// command line and the initrd as module 0, and returns the PVH entry state.
    func load(into memory: GuestMemory, bytes: [UInt8], initrd: [UInt8]?, cmdline: String, path: String) throws(BootError) -> BootCPUState {
        for s in segments {
            do {
                let dst = try memory.hostRange(GuestAddress(s.physicalAddress), length: s.memorySize)
                dst.initializeMemory(as: UInt8.self, repeating: 0)
                bytes.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[s.fileRange]))
                }
            } catch {
                throw .doesNotFit(what: "kernel segment at 0x\(String(s.physicalAddress, radix: 16))", size: s.memorySize)
            }
        }
        let cmdlineAddress = try PlatformLayout.writeCommandLine(memory, cmdline, limit: PlatformLayout.commandLineMax)
        let map = PlatformLayout.memoryMap(memory)
        do {
            var modules: UInt32 = 0
            if let initrd {
                let address = try PlatformLayout.placeInitrd(memory, initrd, floor: end, limit: PCMemoryMap.lowRAMEnd)
                // hvm_modlist_entry: paddr, size, cmdline_paddr, reserved
                try memory.store(address, at: GuestAddress(PlatformLayout.pvhModules))
                try memory.store(UInt64(initrd.count), at: GuestAddress(PlatformLayout.pvhModules + 8))
                try memory.store(UInt64(0), at: GuestAddress(PlatformLayout.pvhModules + 16))
                try memory.store(UInt64(0), at: GuestAddress(PlatformLayout.pvhModules + 24))
                modules = 1
            }
            for (i, e) in map.enumerated() {
                // hvm_memmap_table_entry: addr, size, type, reserved
                let at = PlatformLayout.pvhMemoryMap + UInt64(i) * 24
                try memory.store(e.address, at: GuestAddress(at))
                try memory.store(e.size, at: GuestAddress(at + 8))
                try memory.store(e.kind.rawValue, at: GuestAddress(at + 16))
                try memory.store(UInt32(0), at: GuestAddress(at + 20))
            }
            // hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), version 1.
            let si = PlatformLayout.pvhStartInfo
            try memory.fill(GuestAddress(si), length: 56, with: 0)
            try memory.store(UInt32(0x336E_C578), at: GuestAddress(si))
            try memory.store(UInt32(1), at: GuestAddress(si + 4))
            try memory.store(modules, at: GuestAddress(si + 12))
            try memory.store(modules > 0 ? PlatformLayout.pvhModules : 0, at: GuestAddress(si + 16))
            try memory.store(cmdlineAddress, at: GuestAddress(si + 24))
            try memory.store(PlatformLayout.pvhMemoryMap, at: GuestAddress(si + 40))
            try memory.store(UInt32(map.count), at: GuestAddress(si + 48))
            let gdt = try PlatformLayout.writeGDT(memory, longMode: false)
            return BootCPUState(mode: .protected32, entry: UInt64(entry), rbx: si, gdtBase: gdt.base, gdtLimit: gdt.limit)
        } catch let e as BootError {
            throw e
        } catch {
            throw .doesNotFit(what: "boot information", size: 0)
        }
    }
}
