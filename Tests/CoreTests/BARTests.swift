import Testing
import VMMCore
import VMMTestKit

/// BAR sizing, placement, relocation and decode (PCI 3.0 §6.2.5.1, §6.2.2).
@Suite struct BARTests {
    @Test func sizingProtocolReportsSizeAndTypeBits() throws {
        let rig = try SampleRig(enable: false)
        let d = rig.device
        let expected: [(Int, UInt32)] = [
            (0x10, 0xFFFF_F000), // 32-bit MMIO 4 KiB
            (0x14, 0xFFFF_FFE1), // I/O 32 bytes
            (0x18, 0xFFFF_C00C), // 64-bit prefetchable 16 KiB, low half
            (0x1C, 0xFFFF_FFFF), // its high half
            (0x20, 0xFFFF_0008), // 32-bit prefetchable 64 KiB
            (0x24, 0x0000_0000), // unimplemented
        ]
        for (offset, mask) in expected {
            d.configWrite(offset, value: 0xFFFF_FFFF)
            #expect(d.configRead(offset) == mask, "BAR at 0x\(String(offset, radix: 16))")
        }
        // The test kit's firmware helper reads the same thing.
        let fw = rig.machine.firmware
        #expect(fw.sizeBAR(slot: d.slot, bar: 0)! == (0x1000, false, false))
        #expect(fw.sizeBAR(slot: d.slot, bar: 1)! == (32, true, false))
        #expect(fw.sizeBAR(slot: d.slot, bar: 2)! == (0x4000, false, true))
        #expect(fw.sizeBAR(slot: d.slot, bar: 4)! == (0x1_0000, false, false))
        #expect(fw.sizeBAR(slot: d.slot, bar: 5) == nil)
        // The expansion ROM BAR is not implemented: reads zero, ignores writes.
        d.configWrite(0x30, value: 0xFFFF_FFFF)
        #expect(d.configRead(0x30) == 0)
    }

    @Test func placedBARsReachTheDeviceInEverySpace() throws {
        let rig = try SampleRig()
        let d = rig.device
        #expect(rig.command & (memoryDecode | ioDecode | busMaster) == memoryDecode | ioDecode | busMaster)
        #expect(d.barAddress(0) % 0x1000 == 0 && d.barAddress(0) >= PCMemoryMap.pciMMIO32.lowerBound)
        #expect(d.barAddress(1) >= PCMemoryMap.pciIO.lowerBound && d.barAddress(1) % 32 == 0)
        d.write32(bar: 0, offset: 0, 0xCAFE_F00D)
        #expect(d.read32(bar: 0, offset: 0) == 0xCAFE_F00D)
        #expect(d.read32(bar: 1, offset: 0) == 0xCAFE_F00D) // same register through the I/O BAR
        d.write64(bar: 4, offset: 0xFFF8, 0x0102_0304_0506_0708)
        #expect(d.read16(bar: 4, offset: 0xFFFA) == 0x0506)
        let seen = rig.sample.accesses
        #expect(seen.contains { $0.bar == 1 && $0.offset == 0 && $0.size == 4 && !$0.write })
        #expect(seen.contains { $0.bar == 4 && $0.offset == 0xFFF8 && $0.size == 8 && $0.write })
        #expect(rig.device.function.mappedBARs[0] == d.barAddress(0) ..< d.barAddress(0) + 0x1000)
    }

    @Test func relocationMovesDecodeForEveryBARKind() throws {
        let rig = try SampleRig()
        let d = rig.device
        let old0 = d.barAddress(0), old1 = d.barAddress(1), old2 = d.barAddress(2)
        d.write32(bar: 0, offset: 0, 0x1234)
        // Like Linux: decode off, reprogram, decode on.
        rig.setCommand(busMaster)
        d.configWrite(0x10, value: 0xE000_0000)
        d.configWrite(0x14, value: 0xD000)
        d.configWrite(0x18, value: 0x0000_0000)       // 64-bit: low…
        d.configWrite(0x1C, value: 0x0000_0180)       // …and high half: 0x180_0000_0000
        rig.setCommand(busMaster | memoryDecode | ioDecode)
        #expect(d.barAddress(0) == 0xE000_0000 && d.barAddress(1) == 0xD000 && d.barAddress(2) == 0x180_0000_0000)
        #expect(rig.machine.mmio.read(0xE000_0000, size: 4) == 0x1234)
        #expect(rig.machine.pio.read(0xD000, size: 4) == 0x1234)
        #expect(rig.machine.mmio.read(old0, size: 4) == 0xFFFF_FFFF)
        #expect(rig.machine.pio.read(old1, size: 4) == 0xFFFF_FFFF)
        #expect(rig.machine.mmio.lookup(old2, size: 4) == nil)
        #expect(rig.machine.mmio.lookup(0x180_0000_0000 + 0x3FF8, size: 8) != nil)
        // Reprogramming while decode stays on also follows (a firmware shortcut).
        d.configWrite(0x10, value: 0xE010_0000)
        #expect(rig.machine.mmio.read(0xE010_0000, size: 4) == 0x1234)
        #expect(rig.machine.mmio.read(0xE000_0000, size: 4) == 0xFFFF_FFFF)
        // Low bits of an address that is not size-aligned are dropped, as hardware does.
        d.configWrite(0x10, value: 0xE020_0ABC)
        #expect(d.configRead(0x10) == 0xE020_0000)
    }

    @Test func commandRegisterStartsAndStopsDecode() throws {
        let rig = try SampleRig()
        let d = rig.device
        let mem = d.barAddress(0), io = d.barAddress(1)
        d.write32(bar: 0, offset: 0, 7)
        let before = rig.sample.accesses.count
        rig.setCommand(ioDecode | busMaster) // memory off
        #expect(rig.machine.mmio.read(mem, size: 4) == 0xFFFF_FFFF)
        rig.machine.mmio.write(mem, size: 4, value: 99)
        #expect(rig.sample.accesses.count == before)
        #expect(rig.machine.pio.read(io, size: 4) == 7) // I/O still decodes
        rig.setCommand(memoryDecode | busMaster)        // I/O off, memory on
        #expect(rig.machine.pio.read(io, size: 4) == 0xFFFF_FFFF)
        #expect(rig.machine.mmio.read(mem, size: 4) == 7)
        #expect(rig.sample.accesses.count == before + 2)
        // Byte write to the low command byte alone also counts.
        d.configWrite(0x04, size: 1, value: 0)
        #expect(rig.machine.mmio.read(mem, size: 4) == 0xFFFF_FFFF)
        d.configWrite(0x04, size: 1, value: memoryDecode)
        #expect(rig.machine.mmio.read(mem, size: 4) == 7)
    }

    @Test func sizingWithDecodeOnDoesNotDecodeTheAllOnesPattern() throws {
        let rig = try SampleRig()
        let d = rig.device
        d.configWrite(0x10, value: 0xFFFF_FFFF)
        // 0xFFFFF000..0xFFFFFFFF would be the top of the 32-bit space (the BIOS flash on a PC).
        #expect(d.function.mappedBARs[0] == nil)
        #expect(rig.machine.mmio.lookup(0xFFFF_F000, size: 4) == nil)
        d.configWrite(0x14, value: 0xFFFF_FFFF)
        #expect(d.function.mappedBARs[1] == nil)
    }

    @Test func barMovedOverAnotherBAROrRAMIsNotDecoded() throws {
        let machine = try TestMachine()
        let (a, sa) = try SampleRig.add(to: machine)
        let (b, sb) = try SampleRig.add(to: machine)
        a.write32(bar: 0, offset: 0, 0xA)
        b.write32(bar: 0, offset: 0, 0xB)
        let aBar0 = a.barAddress(0)
        // b's BAR0 onto a's BAR0: rejected, a keeps answering, b's BAR0 decodes nowhere.
        b.configWrite(0x10, value: UInt32(aBar0))
        #expect(b.function.mappedBARs[0] == nil)
        #expect(machine.mmio.read(aBar0, size: 4) == 0xA)
        // Overlap with another BAR of the same device (BAR4 is 64 KiB, covers BAR0's 4 KiB).
        let oldBar4 = a.barAddress(4)
        a.configWrite(0x20, value: UInt32(aBar0 & ~0xFFFF))
        #expect(a.function.mappedBARs[4] == nil)
        #expect(machine.mmio.read(aBar0, size: 4) == 0xA)
        // Moved back out, it decodes again.
        a.configWrite(0x20, value: UInt32(oldBar4))
        #expect(a.function.mappedBARs[4] != nil)
        // Over RAM (the first MiB): never decoded, RAM stays RAM.
        try machine.memory.store(UInt32(0x5555_5555), at: GuestAddress(0x10_0000))
        b.configWrite(0x10, value: 0x10_0000)
        #expect(b.function.mappedBARs[0] == nil)
        #expect(machine.mmio.lookup(0x10_0000, size: 4) == nil)
        #expect(try machine.memory.load(UInt32.self, at: GuestAddress(0x10_0000)) == 0x5555_5555)
        // A 64-bit BAR placed so its end would pass 2^64: not decoded, no trap.
        b.configWrite(0x18, value: 0xFFFF_C000)
        b.configWrite(0x1C, value: 0xFFFF_FFFF)
        #expect(b.function.mappedBARs[2] == nil)
        // A 64-bit BAR over high RAM: not decoded.
        let big = try TestMachine(memorySize: 0xC010_0000)
        let (c, _) = try SampleRig.add(to: big)
        c.configWrite(0x18, value: 0)
        c.configWrite(0x1C, value: 1)
        #expect(c.function.mappedBARs[2] == nil)
        // The VMM is still fine: b's registers still work through its I/O BAR.
        #expect(machine.pio.read(b.barAddress(1), size: 4) == 0xB)
        #expect(sa.accesses.isEmpty == false && sb.accesses.isEmpty == false)
    }

    @Test func busResourceAssignmentPlacesLargestFirstWithoutOverlap() throws {
        let machine = try TestMachine()
        let devices = try (0 ..< 3).map { _ in try SampleRig.add(to: machine, enable: false).0 }
        try machine.bus.assignResources()
        var ranges: [Range<UInt64>] = []
        for d in devices {
            #expect(d.configRead(0x04, size: 2) & 0x7 == 0x7)
            for bar in [0, 1, 2, 4] {
                let r = try #require(d.function.mappedBARs[bar])
                #expect(r.lowerBound % UInt64(r.count) == 0)
                ranges.append(r)
            }
        }
        for (i, r) in ranges.enumerated() {
            for s in ranges[(i + 1)...] where (r.lowerBound < 0x1_0000) == (s.lowerBound < 0x1_0000) {
                #expect(!r.overlaps(s))
            }
        }
        // Like SeaBIOS, 64-bit BARs stay below 4 GiB while the 32-bit window has room.
        #expect(devices.allSatisfy { PCMemoryMap.pciMMIO32.contains($0.barAddress(2)) })
    }

    @Test func sixtyFourBitBARsGoAbove4GiBWhenTheLowWindowIsFull() throws {
        let machine = try TestMachine()
        let devices = try (0 ..< 2).map { _ in try SampleRig.add(to: machine, enable: false).0 }
        // A 32-bit window with room for the 32-bit BARs only.
        let low = PCMemoryMap.pciMMIO32.lowerBound
        try machine.bus.assignResources(mmio32: low ..< low + 0x2_2000)
        for d in devices {
            #expect(PCMemoryMap.pciMMIO64.contains(d.barAddress(2)))
            #expect(d.function.mappedBARs[2] != nil)
        }
        #expect(throws: PCIBusError.windowFull(device: "sample@1.0", bar: 4)) {
            try machine.bus.assignResources(mmio32: low ..< low + 0x1000)
        }
    }

    @Test func machineResetUnprogramsBARsAndCallsDevices() throws {
        let rig = try SampleRig(options: "msix=2,msi=1")
        rig.device.write32(bar: 0, offset: 0, 5)
        rig.device.programMSIX(vector: 0, data: 1)
        rig.machine.bus.reset()
        #expect(rig.command == 0)
        #expect(rig.device.configRead(0x10) == 0)
        #expect(rig.device.function.mappedBARs.allSatisfy { $0 == nil })
        #expect(rig.sample.resets == 1)
        #expect(rig.device.function.interrupts.mode == .intx)
        let cap = try #require(rig.device.capability(0x11))
        #expect(rig.device.configRead(cap + 2, size: 2) & 0xC000 == 0)
    }
}

@Suite struct BARDeclarationTests {
    @Test func declarationsThatCannotWorkAreRefused() {
        let config = PCIConfigSpace(identity: PCIIdentity(vendorID: 1, deviceID: 2, classCode: 0))
        #expect(config.declareBAR(0, .memory64(size: 0x1000)))
        #expect(!config.declareBAR(1, .io(size: 8)))              // BAR1 is BAR0's upper half
        #expect(!config.declareBAR(0, .io(size: 8)))              // taken
        #expect(!config.declareBAR(5, .memory64(size: 0x1000)))   // no BAR6 for the upper half
        #expect(!config.declareBAR(6, .io(size: 8)))
        #expect(!config.declareBAR(2, .memory32(size: 0x3000)))   // not a power of two
        #expect(config.declareBAR(3, .io(size: 8)))
        #expect(!config.declareBAR(2, .memory64(size: 0x1000)))   // its upper half (BAR3) is taken
        #expect(config.declareBAR(4, .memory32(size: 1)))          // rounded up to 16 bytes
        #expect(config.bars[4] == .memory32(size: 16))
        #expect(config.bars[3] == .io(size: 8))
    }
}
