import Testing
import VMMCore
import VMMTestKit

/// MSI (PCI 3.0 §6.8.1), MSI-X (§6.8.2) and INTx (§2.2.6) as the core emulates them.
@Suite struct MSITests {
    /// Programs the MSI capability like Linux: address, data, then enable with `mme` (log2 of vectors).
    static func program(_ d: TestDevice, data: UInt32 = 0x4020, mme: UInt32) throws -> Int {
        let cap = try #require(d.capability(0x05))
        d.configWrite(cap + 4, value: 0xFEE0_1000)
        d.configWrite(cap + 8, value: 0)
        d.configWrite(cap + 12, size: 2, value: data)
        let control = d.configRead(cap + 2, size: 2)
        d.configWrite(cap + 2, size: 2, value: control | 1 | mme << 4)
        return cap
    }

    @Test func capabilityAdvertisesVectorsAndMasking() throws {
        let rig = try SampleRig(options: "msi=4", enable: false)
        let cap = try #require(rig.device.capability(0x05))
        #expect(rig.device.configRead(0x06, size: 2) & 0x10 != 0) // capabilities list bit
        let control = rig.device.configRead(cap + 2, size: 2)
        #expect(control == 0x0184) // per-vector masking, 64-bit, MMC=4 vectors, disabled
        // Read-only bits stay: writing all ones sets only enable + MME.
        rig.device.configWrite(cap + 2, size: 2, value: 0xFFFF)
        #expect(rig.device.configRead(cap + 2, size: 2) == 0x01F5)
        rig.device.configWrite(cap + 4, value: 0xFFFF_FFFF)
        #expect(rig.device.configRead(cap + 4) == 0xFFFF_FFFC) // dword aligned
    }

    @Test func enabledMSISendsMultipleMessagesWithVectorInDataLowBits() throws {
        let rig = try SampleRig(options: "msi=4")
        _ = try Self.program(rig.device, mme: 2)
        #expect(rig.device.function.interrupts.mode == .msi)
        rig.device.write32(bar: 0, offset: 4, 3)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x4023, 0x4020])
        #expect(rig.machine.interrupts.messages.allSatisfy { $0.address == 0xFEE0_1000 })
    }

    @Test func vectorsBeyondWhatTheDriverEnabledAreDropped() throws {
        let rig = try SampleRig(options: "msi=4")
        _ = try Self.program(rig.device, mme: 0) // one message only
        rig.device.write32(bar: 0, offset: 4, 1)
        rig.device.write32(bar: 0, offset: 4, 0xFFFF_FFFF)
        #expect(rig.machine.interrupts.messages.isEmpty)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x4020])
    }

    @Test func maskedVectorBecomesPendingAndIsDeliveredOnUnmask() throws {
        let rig = try SampleRig(options: "msi=4")
        let cap = try Self.program(rig.device, mme: 2)
        rig.device.configWrite(cap + 16, value: 0b0100) // mask vector 2
        rig.device.write32(bar: 0, offset: 4, 2)
        #expect(rig.machine.interrupts.messages.isEmpty)
        #expect(rig.device.configRead(cap + 20) == 0b0100)
        rig.device.configWrite(cap + 20, value: 0) // pending bits are read-only
        #expect(rig.device.configRead(cap + 20) == 0b0100)
        rig.device.configWrite(cap + 16, value: 0)
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x4022])
        #expect(rig.device.configRead(cap + 20) == 0)
    }

    @Test func noMessageWithoutBusMasteringOrWhenDisabled() throws {
        let rig = try SampleRig(options: "msi=1")
        let cap = try Self.program(rig.device, mme: 0)
        rig.setCommand(memoryDecode | ioDecode)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.isEmpty)
        rig.setCommand(memoryDecode | ioDecode | busMaster)
        rig.device.configWrite(cap + 2, size: 2, value: 0)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.isEmpty)
        #expect(rig.device.function.interrupts.mode == .intx)
    }
}

@Suite struct MSIXTests {
    static let pba: UInt64 = 0x800

    @Test func capabilityDescribesTableAndPBA() throws {
        let rig = try SampleRig(options: "msix=4", enable: false)
        let cap = try #require(rig.device.capability(0x11))
        #expect(rig.device.configRead(cap + 2, size: 2) == 3) // table size - 1, disabled, unmasked
        #expect(rig.device.configRead(cap + 4) == 0x0000_0002) // table at BAR2 + 0
        #expect(rig.device.configRead(cap + 8) == 0x0000_0802) // PBA at BAR2 + 0x800
    }

    @Test func tableEntriesReadBackAndStartMasked() throws {
        let rig = try SampleRig(options: "msix=4")
        let d = rig.device
        #expect(d.read32(bar: 2, offset: 16 * 3 + 12) == 1)
        d.write32(bar: 2, offset: 16, 0xFEE0_2000)
        d.write32(bar: 2, offset: 20, 0x1)
        d.write32(bar: 2, offset: 24, 0x55)
        d.write32(bar: 2, offset: 28, 0xFFFF_FFFF) // only the mask bit is writable
        #expect(d.read64(bar: 2, offset: 16) == 0x1_FEE0_2000)
        #expect(d.read32(bar: 2, offset: 24) == 0x55)
        #expect(d.read32(bar: 2, offset: 28) == 1)
        d.write64(bar: 2, offset: 32, 0xAABB_CCDD_FEE0_3000)
        #expect(d.read32(bar: 2, offset: 36) == 0xAABB_CCDD)
        d.write8(bar: 2, offset: 40, 0x77)
        #expect(d.read32(bar: 2, offset: 40) == 0x77)
        // The device itself never sees table or PBA accesses.
        #expect(!rig.sample.accesses.contains { $0.bar == 2 })
        // Past the table (and past the PBA) the device answers.
        _ = d.read32(bar: 2, offset: 0x400)
        #expect(rig.sample.accesses.contains { $0.bar == 2 && $0.offset == 0x400 })
    }

    @Test func unmaskedVectorSendsItsMessage() throws {
        let rig = try SampleRig(options: "msix=4")
        rig.device.programMSIX(vector: 1, address: 0xFEE0_0000, data: 0x31)
        #expect(rig.device.function.interrupts.mode == .msix)
        rig.device.write32(bar: 0, offset: 4, 1)
        #expect(rig.machine.interrupts.messages.count == 1)
        #expect(rig.machine.interrupts.messages.first?.address == 0xFEE0_0000)
        #expect(rig.machine.interrupts.messages.first?.data == 0x31)
        rig.device.write32(bar: 0, offset: 4, 4) // no such entry
        #expect(rig.machine.interrupts.messages.count == 1)
    }

    @Test func perVectorMaskSetsPBAAndUnmaskDelivers() throws {
        let rig = try SampleRig(options: "msix=4")
        let d = rig.device
        d.programMSIX(vector: 0, data: 0x20)
        d.write32(bar: 2, offset: 12, 1) // mask entry 0
        d.write32(bar: 0, offset: 4, 0)
        d.write32(bar: 0, offset: 4, 0) // twice: still one pending bit, one message later
        #expect(rig.machine.interrupts.messages.isEmpty)
        #expect(d.read64(bar: 2, offset: Self.pba) == 1)
        d.write64(bar: 2, offset: Self.pba, 0) // PBA is read-only
        #expect(d.read32(bar: 2, offset: Self.pba) == 1)
        d.write32(bar: 2, offset: 12, 0)
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x20])
        #expect(d.read64(bar: 2, offset: Self.pba) == 0)
    }

    @Test func functionMaskHoldsEveryVectorUntilCleared() throws {
        let rig = try SampleRig(options: "msix=4")
        let d = rig.device
        d.programMSIX(vector: 1, data: 0x21)
        d.programMSIX(vector: 2, data: 0x22)
        let cap = try #require(d.capability(0x11))
        d.configWrite(cap + 2, size: 2, value: 0xC000) // enable + function mask
        d.write32(bar: 0, offset: 4, 2)
        d.write32(bar: 0, offset: 4, 1)
        #expect(rig.machine.interrupts.messages.isEmpty)
        #expect(d.read32(bar: 2, offset: Self.pba) == 0b110)
        d.configWrite(cap + 3, size: 1, value: 0x80) // clear function mask with a byte write
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x21, 0x22])
        #expect(d.read32(bar: 2, offset: Self.pba) == 0)
    }

    @Test func busMasterOffMeansNoMessage() throws {
        let rig = try SampleRig(options: "msix=2")
        rig.device.programMSIX(vector: 0, data: 0x40)
        rig.setCommand(memoryDecode | ioDecode)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.isEmpty)
        rig.setCommand(memoryDecode | ioDecode | busMaster)
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.messages.map(\.data) == [0x40])
    }

    @Test func msixWinsOverMSIAndINTx() throws {
        let rig = try SampleRig(options: "msix=1,msi=1")
        _ = try MSITests.program(rig.device, mme: 0)
        rig.device.programMSIX(vector: 0, data: 0x99)
        rig.device.write32(bar: 0, offset: 8, 1) // INTx request: not driven while messages are on
        rig.device.write32(bar: 0, offset: 4, 0)
        #expect(rig.machine.interrupts.events == [.msi(address: 0xFEE0_0000, data: 0x99)])
    }
}

@Suite struct INTxTests {
    @Test func levelFollowsTheDeviceAndStatusBitMirrorsIt() throws {
        let rig = try SampleRig(slot: 3)
        let line = try #require(rig.device.function.interrupts.intxLine)
        #expect(line == PCIBus.defaultINTxRoute(3, 1))
        rig.device.write32(bar: 0, offset: 8, 1)
        rig.device.write32(bar: 0, offset: 8, 1) // already high: no new edge
        #expect(rig.machine.interrupts.level(line: line))
        #expect(rig.device.configRead(0x06, size: 2) & 0x08 != 0)
        rig.device.write32(bar: 0, offset: 8, 0)
        #expect(!rig.machine.interrupts.level(line: line))
        #expect(rig.device.configRead(0x06, size: 2) & 0x08 == 0)
        #expect(rig.machine.interrupts.events == [.line(line, level: true), .line(line, level: false)])
    }

    @Test func interruptDisableBitGatesThePinNotTheStatus() throws {
        let rig = try SampleRig()
        let line = try #require(rig.device.function.interrupts.intxLine)
        rig.device.write32(bar: 0, offset: 8, 1)
        rig.setCommand(rig.command | interruptDisable)
        #expect(!rig.machine.interrupts.level(line: line))
        #expect(rig.device.configRead(0x06, size: 2) & 0x08 != 0)
        rig.setCommand(rig.command & ~interruptDisable)
        #expect(rig.machine.interrupts.level(line: line))
    }

    @Test func sharedLineIsTheOrOfItsDevices() throws {
        let machine = try TestMachine()
        // Slots 1 and 9 share a line under the default rotation (16 + (slot + pin - 1) % 8).
        let (a, _) = try SampleRig.add(to: machine, slot: 1)
        let (b, _) = try SampleRig.add(to: machine, slot: 9)
        let line = try #require(a.function.interrupts.intxLine)
        #expect(b.function.interrupts.intxLine == line)
        a.write32(bar: 0, offset: 8, 1)
        b.write32(bar: 0, offset: 8, 1)
        a.write32(bar: 0, offset: 8, 0)
        #expect(machine.interrupts.level(line: line)) // b still holds it
        b.write32(bar: 0, offset: 8, 0)
        #expect(!machine.interrupts.level(line: line))
        #expect(machine.interrupts.events == [.line(line, level: true), .line(line, level: false)])
    }

    @Test func enablingMSIReleasesTheLine() throws {
        let rig = try SampleRig(options: "msi=1")
        let line = try #require(rig.device.function.interrupts.intxLine)
        rig.device.write32(bar: 0, offset: 8, 1)
        #expect(rig.machine.interrupts.level(line: line))
        let cap = try MSITests.program(rig.device, mme: 0)
        #expect(!rig.machine.interrupts.level(line: line))
        rig.device.configWrite(cap + 2, size: 2, value: 0)
        #expect(rig.machine.interrupts.level(line: line))
    }

    @Test func deviceWithoutINTxHasNoPinAndDrivesNothing() throws {
        let rig = try SampleRig(options: "intx=off")
        #expect(rig.device.configRead(0x3D, size: 1) == 0)
        rig.device.write32(bar: 0, offset: 8, 1)
        #expect(rig.machine.interrupts.events.isEmpty)
    }
}
