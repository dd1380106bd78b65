import Testing
import VMMCore
import VMMTestKit

/// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) as firmware and Linux use it.
@Suite struct EnumerationTests {
    @Test func firmwareFindsHostBridgeAndDevicesThroughCF8() throws {
        let machine = try TestMachine()
        _ = try SampleRig.add(to: machine, slot: 3, enable: false)
        _ = try SampleRig.add(to: machine, options: "vendor=0x8086", slot: 7, enable: false)
        let found = machine.firmware.enumerate()
        #expect(found.map(\.slot) == [0, 3, 7])
        #expect(found[0].vendorID == 0x8086 && found[0].deviceID == 0x1237 && found[0].classCode == 0x06_00_00)
        #expect(found[1].vendorID == SampleDevice.vendorID && found[1].deviceID == SampleDevice.deviceID)
        #expect(found[1].classCode == 0xFF_00_00)
        #expect(found[2].vendorID == 0x8086)
    }

    @Test func headerFieldsReadThroughByteWordAndDwordCycles() throws {
        let rig = try SampleRig(slot: 4, enable: false)
        let d = rig.device
        #expect(d.configRead(0x00) == UInt32(SampleDevice.deviceID) << 16 | UInt32(SampleDevice.vendorID))
        #expect(d.configRead(0x02, size: 2) == UInt32(SampleDevice.deviceID))
        #expect(d.configRead(0x01, size: 1) == UInt32(SampleDevice.vendorID >> 8))
        #expect(d.configRead(0x08) == 0xFF00_0002) // class ff0000, revision 2
        #expect(d.configRead(0x0E, size: 1) == 0)  // type-0 header, single function
        #expect(d.configRead(0x2C) == 0x1100_1AF4)
        #expect(d.configRead(0x3D, size: 1) == 1)  // INTA
        #expect(d.configRead(0x3C, size: 1) == UInt32(PCIBus.defaultINTxRoute(4, 1)))
        #expect(d.configRead(0x06, size: 2) & 0x10 == 0) // no capabilities without msi/msix
        // Read-only fields ignore writes; the interrupt line register is the guest's scratch.
        d.configWrite(0x00, value: 0)
        d.configWrite(0x08, value: 0)
        d.configWrite(0x3C, size: 1, value: 0x0B)
        #expect(d.configRead(0x00) & 0xFFFF == UInt32(SampleDevice.vendorID))
        #expect(d.configRead(0x08) == 0xFF00_0002)
        #expect(d.configRead(0x3C, size: 1) == 0x0B)
    }

    @Test func configAddressRegisterAndDisabledCycles() throws {
        let rig = try SampleRig(slot: 2, enable: false)
        let pio = rig.machine.pio
        // CONFIG_ADDRESS reads back what was written, minus reserved bits (1:0, 30:24).
        pio.write(0xCF8, size: 4, value: 0xFFFF_FFFF)
        #expect(pio.read(0xCF8, size: 4) == 0x80FF_FFFC)
        // Enable bit clear: the data port answers all ones.
        pio.write(0xCF8, size: 4, value: 0x0000_1000)
        #expect(pio.read(0xCFC, size: 4) == 0xFFFF_FFFF)
        // Another bus: nothing there.
        pio.write(0xCF8, size: 4, value: 0x8001_1000)
        #expect(pio.read(0xCFC, size: 4) == 0xFFFF_FFFF)
        // Empty slot, and function 1 of a single-function device.
        #expect(rig.machine.ports.read(slot: 9, offset: 0) == 0xFFFF_FFFF)
        #expect(rig.machine.ports.read(slot: 2, function: 1, offset: 0) == 0xFFFF_FFFF)
        #expect(rig.machine.ports.read(slot: 9, offset: 0, size: 2) == 0xFFFF)
        // Byte access to CONFIG_ADDRESS is not a config cycle (it's I/O to other devices on a PC).
        pio.write(0xCF8, size: 4, value: 0x8000_1000)
        pio.write(0xCF8, size: 1, value: 0)
        #expect(pio.read(0xCF8, size: 4) == 0x8000_1000)
        // Data port at 0xCFE reads the upper half of the selected dword.
        #expect(pio.read(0xCFE, size: 2) == UInt64(SampleDevice.deviceID))
        // Unsupported sizes and straddling accesses are harmless.
        #expect(pio.read(0xCFC, size: 8) == UInt64.max)
        #expect(pio.read(0xCFE, size: 4) == 0xFFFF_FFFF)
    }

    @Test func slotAssignmentAutomaticAndChosen() throws {
        let machine = try TestMachine()
        let (a, _) = try SampleRig.add(to: machine, enable: false)
        let (b, _) = try SampleRig.add(to: machine, slot: 5, enable: false)
        let (c, _) = try SampleRig.add(to: machine, enable: false)
        #expect([a.slot, b.slot, c.slot] == [1, 5, 2])
        #expect(throws: PCIBusError.slotInUse(5)) { try machine.add(SampleDevice.self, slot: 5) }
        #expect(throws: PCIBusError.badSlot(0, function: 0)) { try machine.add(SampleDevice.self, slot: 0) }
        #expect(throws: PCIBusError.badSlot(32, function: 0)) { try machine.add(SampleDevice.self, slot: 32) }
        #expect(machine.bus.function(slot: 5)?.name == "sample@5.0")
        // Each device of a type learns its index (NICs derive their default MAC from it).
        let indices = [a, b, c].compactMap { ($0.function.device as? SampleDevice)?.context.instanceIndex }
        #expect(indices == [0, 1, 2])
    }

    @Test func multiFunctionSlotIsAdvertisedAndEnumerated() throws {
        let machine = try TestMachine()
        var options = DeviceOptions(device: "sample")
        try machine.bus.add(SampleDevice.self, options: &options, slot: 6, function: 0)
        #expect(machine.ports.read(slot: 6, offset: 0x0E, size: 1) == 0) // alone: single-function
        try machine.bus.add(SampleDevice.self, options: &options, slot: 6, function: 3)
        #expect(machine.ports.read(slot: 6, offset: 0x0E, size: 1) == 0x80)
        #expect(machine.ports.read(slot: 6, function: 3, offset: 0) & 0xFFFF == UInt32(SampleDevice.vendorID))
        let found = machine.firmware.enumerate().map { "\($0.slot).\($0.function)" }
        #expect(found == ["0.0", "6.0", "6.3"])
        #expect(throws: PCIBusError.slotInUse(6)) { try machine.bus.add(SampleDevice.self, options: &options, slot: 6, function: 3) }
        #expect(throws: PCIBusError.badSlot(6, function: 8)) {
            try machine.bus.add(SampleDevice.self, options: &options, slot: 6, function: 8)
        }
    }

    @Test func deviceListSpecThroughTheRegistry() throws {
        let machine = try TestMachine()
        let registry = PCIDeviceRegistry([SampleDevice.self])
        let fn = try machine.bus.add(spec: DeviceSpec.parse("sample,msix=2,intx=off"), registry: registry)
        #expect(fn.interrupts.msix?.vectors == 2)
        #expect(fn.config.interruptPin == 0)
        #expect(throws: OptionError.unknownDevice("e1001", known: ["sample"])) {
            try machine.bus.add(spec: DeviceSpec.parse("e1001"), registry: registry)
        }
    }
}
