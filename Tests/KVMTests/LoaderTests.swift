import Foundation
import KVM
import Testing
import VMMCore

/// Boot-loader input validation: everything in a kernel file is untrusted, so every bad
/// field is a typed error naming the file, never a trap. No KVM needed.
struct PVHLoaderTests {
    @Test func acceptsMinimalPVHELF() throws {
        let image = try KernelImage(bytes: TestELF.pvh(code: [0xF4]), path: "k")
        #expect(image.formatName == "PVH ELF")
        let memory = try GuestMemory(pcRAMSize: 16 << 20)
        let boot = try image.load(into: memory, initrd: nil, cmdline: "abc")
        #expect(boot.mode == .protected32)
        #expect(boot.entry == 0x10_0100)
        #expect(boot.rbx == PlatformLayout.pvhStartInfo)
        #expect(try memory.load(UInt32.self, at: GuestAddress(PlatformLayout.pvhStartInfo)) == 0x336E_C578)
        #expect(try memory.readBytes(at: GuestAddress(PlatformLayout.commandLine), count: 4) == Array("abc\0".utf8))
        #expect(try memory.load(UInt8.self, at: GuestAddress(0x10_0100)) == 0xF4)
    }

    @Test func rejectsELFWithoutPVHNote() {
        #expect(throws: BootError.noPVHEntry(path: "k")) { try KernelImage(bytes: TestELF.pvh(code: [0xF4], withNote: false), path: "k") }
        #expect(throws: BootError.noPVHEntry(path: "k")) { try KernelImage(bytes: TestELF.pvh(code: [0xF4], noteType: 17), path: "k") }
    }

    @Test func rejectsNonKernel() {
        #expect(throws: BootError.notAKernel(path: "k")) { try KernelImage(bytes: Array("#!/bin/sh\necho hi\n".utf8), path: "k") }
        #expect(throws: BootError.notAKernel(path: "k")) { try KernelImage(bytes: [], path: "k") }
    }

    @Test func everyTruncationIsAnErrorNotATrap() {
        let good = TestELF.pvh(code: [0xF4])
        for n in 0 ..< good.count {
            // Any prefix either parses (when the cut misses everything needed) or throws.
            _ = try? KernelImage(bytes: Array(good.prefix(n)), path: "k")
        }
    }

    @Test func segmentPastTheFileIsRejected() {
        var elf = TestELF.pvh(code: [0xF4])
        elf[68] = 0xFF; elf[69] = 0xFF // p_filesz of PT_LOAD
        #expect(throws: BootError.self) { try KernelImage(bytes: elf, path: "k") }
    }

    @Test func segmentWrappingTheAddressSpaceIsRejected() {
        var elf = TestELF.pvh(code: [0xF4])
        for i in 72 ..< 76 { elf[i] = 0xFF } // p_memsz
        for i in 60 ..< 64 { elf[i] = 0xFF } // p_vaddr
        for i in 64 ..< 68 { elf[i] = 0xFF } // p_paddr: 0xffffffff + 0xffffffff fits in 64 bits; loading must fail
        let image = try? KernelImage(bytes: elf, path: "k")
        let memory = try? GuestMemory(pcRAMSize: 16 << 20)
        if let image, let memory {
            #expect(throws: BootError.self) { try image.load(into: memory, initrd: nil, cmdline: "") }
        }
    }

    @Test func segmentBelowOneMiBIsRejected() {
        var elf = TestELF.pvh(code: [0xF4])
        elf[64] = 0; elf[65] = 0; elf[66] = 0x01; elf[67] = 0 // p_paddr = 0x10000
        #expect(throws: BootError.self) { try KernelImage(bytes: elf, path: "k") }
    }

    @Test func tooLargeInitrdIsAnError() throws {
        let image = try KernelImage(bytes: TestELF.pvh(code: [0xF4]), path: "k")
        let memory = try GuestMemory(pcRAMSize: 16 << 20)
        #expect(throws: BootError.doesNotFit(what: "initrd", size: 20 << 20)) {
            try image.load(into: memory, initrd: [UInt8](repeating: 0, count: 20 << 20), cmdline: "")
        }
    }
}

struct BzImageLoaderTests {
    /// A bzImage-shaped file: setup sectors, header fields at their boot.rst offsets, payload.
    static func bzImage(version: UInt16 = 0x020F, loadFlags: UInt8 = 0x01, xloadFlags: UInt16 = 0x01,
                        setupSects: UInt8 = 4, cmdlineSize: UInt32 = 2048, alignment: UInt32 = 0x20_0000) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: (Int(setupSects) + 1) * 512 + 4096)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0 ..< n { f[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(UInt64(setupSects), 0x1F1, 1)
        put(0xAA55, 0x1FE, 2)
        put(0x66, 0x201, 1) // header length: up to 0x268
        put(0x5372_6448, 0x202, 4)
        put(UInt64(version), 0x206, 2)
        put(UInt64(loadFlags), 0x211, 1)
        put(0x37FF_FFFF, 0x22C, 4)
        put(UInt64(alignment), 0x230, 4)
        put(1, 0x234, 1)
        put(UInt64(xloadFlags), 0x236, 2)
        put(UInt64(cmdlineSize), 0x238, 4)
        put(0x100_0000, 0x258, 8)
        put(0x1_0000, 0x260, 4)
        return f
    }

    @Test func loadsWithZeroPageAndLongModeEntry() throws {
        let image = try KernelImage(bytes: Self.bzImage(), path: "bz")
        #expect(image.formatName == "bzImage")
        let memory = try GuestMemory(pcRAMSize: 64 << 20)
        let boot = try image.load(into: memory, initrd: [1, 2, 3], cmdline: "console=ttyS0")
        #expect(boot.entry == 0x20_0200) // 1 MiB rounded up to 2 MiB alignment, + 0x200
        guard case let .long64(root) = boot.mode else {
            Issue.record("expected long mode")
            return
        }
        #expect(root == PlatformLayout.pageTables)
        let zp = PlatformLayout.zeroPage
        #expect(try memory.load(UInt32.self, at: GuestAddress(zp + 0x202)) == 0x5372_6448)
        #expect(try memory.load(UInt8.self, at: GuestAddress(zp + 0x210)) == 0xFF)
        #expect(try memory.load(UInt32.self, at: GuestAddress(zp + 0x228)) == UInt32(PlatformLayout.commandLine))
        #expect(try memory.load(UInt32.self, at: GuestAddress(zp + 0x21C)) == 3)
        #expect(try memory.load(UInt8.self, at: GuestAddress(zp + 0x1E8)) == 3) // e820 entries
        // First 2 MiB page identity-mapped, present|writable|large.
        #expect(try memory.load(UInt64.self, at: GuestAddress(PlatformLayout.pageTables + 0x2000)) == 0x83)
    }

    @Test func rejectsBadHeaders() {
        func rejects(_ bytes: [UInt8]) {
            #expect(throws: BootError.self) { try KernelImage(bytes: bytes, path: "bz") }
        }
        rejects(Self.bzImage(version: 0x0206)) // no 64-bit entry before 2.12
        rejects(Self.bzImage(loadFlags: 0)) // not LOADED_HIGH
        rejects(Self.bzImage(xloadFlags: 0)) // no XLF_KERNEL_64
        rejects(Self.bzImage(alignment: 0x30_0000)) // not a power of two
        rejects(Array(Self.bzImage().prefix(0x250))) // truncated header
        var noFlag = Self.bzImage()
        noFlag[0x1FE] = 0
        rejects(noFlag)
        var hugeSetup = Self.bzImage()
        hugeSetup[0x1F1] = 0xFF // setup longer than the file
        rejects(hugeSetup)
    }

    /// A relocatable kernel loaded at 2 MiB moves itself to pref_address (16 MiB here)
    /// and decompresses into init_size bytes from there (boot.rst): the initrd must lie
    /// past that, and RAM must reach it. An initrd placed at 14 MiB, above 2 MiB + init_size,
    /// was overwritten by the kernel.
    @Test func theInitrdStaysClearOfWhereTheKernelRuns() throws {
        let image = try KernelImage(bytes: Self.bzImage(), path: "bz")   // pref 16 MiB, init_size 64 KiB
        let tight = try GuestMemory(pcRAMSize: 18 << 20)
        #expect(throws: BootError.doesNotFit(what: "initrd", size: 4 << 20)) {
            try image.load(into: tight, initrd: [UInt8](repeating: 7, count: 4 << 20), cmdline: "")
        }
        let roomy = try GuestMemory(pcRAMSize: 18 << 20)
        _ = try image.load(into: roomy, initrd: [UInt8](repeating: 7, count: 1 << 20), cmdline: "")
        let address = try roomy.load(UInt32.self, at: GuestAddress(PlatformLayout.zeroPage + 0x218))
        #expect(UInt64(address) >= (16 << 20) + 0x1_0000)
        let small = try GuestMemory(pcRAMSize: 16 << 20)                  // nothing at 16 MiB
        #expect(throws: BootError.self) { try image.load(into: small, initrd: nil, cmdline: "") }
    }

    @Test func commandLineLongerThanCmdlineSizeIsAnError() throws {
        let image = try KernelImage(bytes: Self.bzImage(cmdlineSize: 8), path: "bz")
        let memory = try GuestMemory(pcRAMSize: 64 << 20)
        #expect(throws: BootError.commandLineTooLong(length: 9, limit: 8)) {
            try image.load(into: memory, initrd: nil, cmdline: "123456789")
        }
    }
}

struct MPTableTests {
    @Test func checksumsAndEntries() {
        let table = MPTable(cpus: 2, pciInterrupts: [.init(slot: 3, pin: 1, ioapicPin: 20)])
        let bytes = table.bytes(at: 0xF_0000)
        #expect(Array(bytes[0 ..< 4]) == Array("_MP_".utf8))
        #expect(bytes[0 ..< 16].reduce(0, &+) == 0)
        let config = Array(bytes[16...])
        #expect(Array(config[0 ..< 4]) == Array("PCMP".utf8))
        let length = Int(config[4]) | Int(config[5]) << 8
        #expect(length == config.count)
        #expect(config.reduce(0, &+) == 0)
        // 2 CPUs + 2 buses + IOAPIC + 16 ISA + 1 PCI + 2 local interrupt entries.
        #expect((Int(config[34]) | Int(config[35]) << 8) == 24)
        // The PCI entry: type 3, INT, level/active-high, bus 0, IRQ (3<<2)|0, IOAPIC id 2, pin 20.
        let pci: [UInt8] = [3, 0, 0x0D, 0, 0, 12, 2, 20]
        #expect(config.indices.contains { i in i + 8 <= config.count && Array(config[i ..< i + 8]) == pci })
    }

    @Test func memoryMapSplitsAroundTheHole() throws {
        let memory = try GuestMemory(pcRAMSize: 4 << 30)
        let map = PlatformLayout.memoryMap(memory)
        #expect(map.map(\.address) == [0, 0xF_0000, 0x10_0000, 0x1_0000_0000])
        #expect(map.last?.size == 1 << 30)
    }
}
