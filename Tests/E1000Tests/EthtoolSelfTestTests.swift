import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

/// What Linux's `ethtool -t ethX offline` (drivers/net/ethernet/intel/e1000/e1000_ethtool.c,
/// e1000_diag_test) checks, register by register. The Linux-driver tier runs the real
/// thing; these pin each piece at register level.
@Suite struct EthtoolSelfTestTests {
    /// e1000_reg_test: REG_PATTERN_TEST(FCAH/FCT/VET, 0x0000FFFF, 0xFFFFFFFF).
    @Test func sixteenBitRegistersReadBackMasked() throws {
        let nic = try NIC()
        for reg in [UInt64(0x2C), 0x30, 0x38] { // FCAH, FCT, VET
            for pattern: UInt32 in [0x5A5A_5A5A, 0xA5A5_A5A5, 0, 0xFFFF_FFFF] {
                nic.w(reg, pattern)
                #expect(nic.r(reg) == pattern & 0xFFFF, "register 0x\(String(reg, radix: 16))")
            }
        }
    }

    /// e1000_intr_test: for bits 0–9, IMS = ICS = bit must show the bit in ICR.
    @Test func everyTestedCauseLatchesThroughICS() throws {
        let nic = try NIC()
        nic.w(R.imc, 0xFFFF_FFFF)
        for bit in 0 ..< 10 {
            let mask: UInt32 = 1 << UInt32(bit)
            nic.w(R.ims, mask)
            nic.w(R.ics, mask)
            #expect(nic.r(R.icr) & mask != 0, "ICR bit \(bit)")
            nic.w(R.imc, mask)
        }
    }

    /// e1000_integrated_phy_loopback + e1000_run_loopback_test: with PHY control bit 14,
    /// transmitted frames land on the device's own receive ring and not on the wire, and
    /// the wire's frames are not received.
    @Test func phyLoopbackReturnsTransmittedFramesToTheReceiveRing() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 8, rctl: Bit.rctlEN | Bit.rctlBAM)
        nic.setUpTransmit()
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0 << 16 | 0x4140) // PHY control: loopback, 1000 Mb/s, full duplex
        var frame = [UInt8](repeating: 0xFF, count: 1024)   // e1000_create_lbtest_frame
        for i in 512 ..< 1023 { frame[i] = 0xAA }
        frame[522] = 0xBE; frame[524] = 0xAF
        nic.legacy(frame, cmd: 0x0B)                          // EOP | IFCS | RS
        nic.kickTx()
        #expect(nic.endpoint.takeSent().isEmpty)
        let got = try #require(nic.receiveNext())
        #expect(got.bytes.prefix(1024) == frame[...])
        #expect(nic.endpoint.inject([UInt8](repeating: 0xFF, count: 60)))    // from the wire: lost in loopback
        #expect(nic.receiveNext() == nil)
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0 << 16 | 0x1140) // loopback off: frames go out again
        nic.legacy(frame, cmd: 0x0B)
        nic.kickTx()
        #expect(nic.endpoint.takeSent().count == 1)
    }

    /// In loopback, a full receive ring drops the looped frame (RNBC, MPC) instead of
    /// holding transmit, since nothing would offer it again.
    @Test func loopbackWithAFullRingDropsAndCounts() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 8, rctl: Bit.rctlEN | Bit.rctlBAM, post: 0)
        nic.setUpTransmit()
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0 << 16 | 0x4140)
        nic.legacy([UInt8](repeating: 0xFF, count: 100), cmd: 0x0B)
        nic.kickTx()
        #expect(nic.txStatus(0) & 1 != 0) // transmit completed
        #expect(nic.r(R.mpc) == 1)
    }
}
