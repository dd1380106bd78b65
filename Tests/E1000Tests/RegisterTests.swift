import Testing
import VMMCore
import VMMTestKit
@testable import E1000

@Suite struct RegisterTests {
    @Test func identityAndBARs() throws {
        let nic = try NIC()
        #expect(nic.dev.configRead(0) == 0x100E_8086)
        #expect(nic.dev.configRead(0x2C) == 0x001E_8086)               // subsystem = EEPROM words 12/11
        #expect(nic.dev.configRead(0x08) >> 8 == 0x02_00_00)
        let fw = nic.machine.firmware
        #expect(fw.sizeBAR(slot: nic.dev.slot, bar: 0)?.size == 128 << 10)
        let io = fw.sizeBAR(slot: nic.dev.slot, bar: 1)
        #expect(io?.size == 8 && io?.io == true)
        #expect(nic.dev.configRead(0x3D, size: 1) == 1)                 // INTA
        #expect(nic.dev.capability(0x05) != nil)                        // MSI
    }

    @Test func powerOnStatusReportsLinkAtGigabitFullDuplex() throws {
        let nic = try NIC()
        let status = nic.r(R.status)
        #expect(status & 0x3 == 0x3)            // FD, LU
        #expect(status & 0xC0 == 0x80)          // 1000 Mb/s
        #expect(status & 0x20 == 0)             // not TBI (copper)
    }

    @Test func ctrlResetRestoresPowerOnState() throws {
        let nic = try NIC()
        nic.w(R.ims, 0xFF); nic.w(R.rctl, 0x0400_8002); nic.w(R.tipg, 0x0060_200A)
        nic.w(R.ral0, 0xDEADBEEF); nic.w(R.ics, Bit.txdw)
        #expect(nic.irq)
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlRST)
        #expect(nic.r(R.ctrl) & Bit.ctrlRST == 0)
        #expect(nic.r(R.ims) == 0 && nic.r(R.rctl) == 0 && nic.r(R.tipg) == 0)
        #expect(nic.r(R.icr) == 0)
        #expect(!nic.irq)
        #expect(nic.r(R.ral0) == 0x1200_5452)                           // reloaded from the EEPROM
        #expect(nic.r(R.rah0) == 0x8000_5634)
    }

    @Test func ctrlResetThroughTheIOWindowAsLinuxDoesIt() throws {
        let nic = try NIC()
        nic.w(R.rctl, 2)
        // e1000_reset_hw on 82540: E1000_WRITE_REG_IO(hw, CTRL, ctrl | CTRL_RST).
        nic.dev.write32(bar: 1, offset: 0, 0x0)
        #expect(nic.dev.read32(bar: 1, offset: 0) == 0)
        nic.dev.write32(bar: 1, offset: 4, nic.r(R.ctrl) | Bit.ctrlRST)
        #expect(nic.r(R.rctl) == 0)
        nic.dev.write32(bar: 1, offset: 0, UInt32(R.status))
        #expect(nic.dev.read32(bar: 1, offset: 4) & 2 == 2)
    }

    @Test func narrowAndWideAccessesHitTheRightLanes() throws {
        let nic = try NIC()
        nic.w(R.tipg, 0x1122_3344)
        #expect(nic.dev.read8(bar: 0, offset: R.tipg + 1) == 0x33)
        #expect(nic.dev.read16(bar: 0, offset: R.tipg + 2) == 0x1122)
        nic.dev.write8(bar: 0, offset: R.tipg + 3, 0xAA)
        #expect(nic.r(R.tipg) == 0xAA22_3344)
        nic.dev.write16(bar: 0, offset: R.tipg, 0xBBCC)
        #expect(nic.r(R.tipg) == 0xAA22_BBCC)
        // An 8-byte write is two registers (RDBAL, RDBAH).
        nic.dev.write64(bar: 0, offset: R.rdbal, 0x0000_0001_2345_6780)
        #expect(nic.r(R.rdbal) == 0x2345_6780 && nic.r(R.rdbah) == 1)
        #expect(nic.dev.read64(bar: 0, offset: R.rdbal) == 0x0000_0001_2345_6780)
        // A byte write to IMS sets only bits in that byte (a command register does not merge).
        nic.w(R.ims, 0x0000_0004)
        nic.dev.write8(bar: 0, offset: R.ims + 1, 0x02)
        #expect(nic.r(R.ims) == 0x0000_0204)
    }

    @Test func otherRegistersAreStoredAndReadBack() throws {
        let nic = try NIC()
        for (o, v): (UInt64, UInt32) in [(0x18, 0x1234), (0x28, 0x00C2_8001), (0x2C, 0x0100), (0x30, 0x8808), (0x170, 0x0680),
                                         (0x410, 0x0060_200A), (0x458, 7), (0xE00, 0x0706_8302), (0x1000, 0x0014_0030),
                                         (0x2828, 0x0101_0000), (0x3828, 0x0101_0000), (0x5800, 1), (0x5808, 2), (0x5820, 0x10),
                                         // IP4AT's four entries, the last at 0x5858 (e1000_hw.h E1000_IP4AT_SIZE 4)
                                         (0x5840, 0x0A00_0001), (0x5858, 0x0A00_0004), (0x5880, 0xFE80_0000)] {
            nic.w(o, v)
            #expect(nic.r(o) == v, "register 0x\(String(o, radix: 16))")
        }
        // Statistics and STATUS ignore writes; unknown offsets read 0.
        nic.w(R.gprc, 55)
        #expect(nic.r(R.gprc) == 0)
        nic.w(0x1_F000, 5)
        #expect(nic.r(0x1_F000) == 0)
        #expect(nic.errors(.unknownRegister) == 1)
        // What QMP's x-swiftvmm-counters shows for it: the kinds seen, by name.
        #expect(nic.model.counters.map(\.name) == ["unknown-register"] && nic.model.counters.first?.value == 1)
        let names = E1000GuestError.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" } }, "\(names)")
    }

    @Test func machineResetAlsoResetsThePHY() throws {
        let nic = try NIC()
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 4 << 16 | 0x01E1)            // write ANAR: no pause
        nic.model.reset()
        nic.w(R.mdic, 2 << 26 | 1 << 21 | 4 << 16)
        #expect(nic.r(R.mdic) & 0xFFFF == 0x0DE1)                       // QEMU's phy_reg_init
    }
}
