import Testing
import VMMCore
import VMMTestKit
@testable import E1000

/// The register sequence of Linux's e1000 driver (e1000_hw.c / e1000_main.c) for an
/// 82540, from probe to traffic both ways with its default moderation settings.
@Suite struct LinuxDriverFlowTests {
    @Test func probeOpenAndTrafficWithDefaultModeration() throws {
        let nic = try NIC(options: "mac=52:54:00:12:34:56")
        // e1000_reset_hw: IMC, RCTL=0, TCTL=PSP, then CTRL.RST through the I/O window.
        nic.w(R.imc, 0xFFFF_FFFF); nic.w(R.rctl, 0); nic.w(R.tctl, Bit.tctlPSP)
        nic.dev.write32(bar: 1, offset: 0, 0)
        nic.dev.write32(bar: 1, offset: 4, nic.r(R.ctrl) | Bit.ctrlRST)
        nic.w(R.imc, 0xFFFF_FFFF); _ = nic.r(R.icr)

        // e1000_validate_eeprom_checksum + e1000_read_mac_addr (Microwire).
        let mw = EEPROMTests.Microwire(nic)
        mw.acquire()
        let words = (0 ..< 64).map { mw.read($0) }
        mw.release()
        #expect(words.reduce(UInt16(0), &+) == 0xBABA)
        #expect(words[0 ..< 3] == [0x5452, 0x1200, 0x5634])

        // e1000_detect_gig_phy, e1000_phy_hw_reset, autoneg.
        func phy(_ reg: UInt32) -> UInt16 { nic.w(R.mdic, 2 << 26 | 1 << 21 | reg << 16); return UInt16(truncatingIfNeeded: nic.r(R.mdic)) }
        func phyWrite(_ reg: UInt32, _ v: UInt16) { nic.w(R.mdic, 1 << 26 | 1 << 21 | reg << 16 | UInt32(v)) }
        #expect(UInt32(phy(2)) << 16 | UInt32(phy(3) & 0xFFF0) == 0x0141_0C20)
        let ctrl = nic.r(R.ctrl) | Bit.ctrlSLU
        nic.w(R.ctrl, ctrl | 1 << 31); nic.w(R.ctrl, ctrl)
        phyWrite(16, 0x0068); phyWrite(20, 0x0D60)
        phyWrite(0, phy(0) | 0x8000)
        phyWrite(4, 0x0DE1); phyWrite(9, 0x0200)
        phyWrite(0, 0x1200)
        _ = phy(1)
        #expect(phy(1) & 0x24 == 0x24)

        // e1000_configure_tx / e1000_configure_rx / e1000_irq_enable, as e1000_open does.
        nic.w(R.tipg, 0x0060_200A)
        nic.setUpTransmit(count: 16)
        nic.w(R.tidv, 8); nic.w(R.tadv, 32)
        nic.w(R.tctl, Bit.tctlEN | Bit.tctlPSP | 0x0F << 4 | 0x40 << 12)
        nic.w(R.rdtr, 0); nic.w(R.radv, 8); nic.w(R.itr, 195)
        nic.w(R.rxcsum, 1 << 9)
        nic.setUpReceive(count: 16, rctl: Bit.rctlEN | Bit.rctlBAM)
        nic.w(R.ims, Bit.rxt0 | Bit.txdw | Bit.rxdmt0 | 0x8 | Bit.lsc)
        nic.w(R.ics, Bit.lsc)                                             // kick the watchdog
        #expect(nic.irq)
        #expect(nic.r(R.icr) & Bit.lsc != 0)
        #expect(nic.r(R.status) & 0xC3 == 0x83)

        // A frame arrives: interrupt at once (the last one was over 50 µs ago), NAPI cleans.
        nic.machine.advance(microseconds: 100)
        let request = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(500))
        #expect(nic.endpoint.inject(request))
        #expect(nic.irq)
        #expect(nic.r(R.icr) & Bit.rxt0 != 0)
        nic.w(R.imc, 0xFFFF_FFFF)
        let (bytes, d) = try #require(nic.receiveNext())
        #expect(Array(bytes.dropLast(4)) == request)                     // length includes the FCS
        #expect(d.status & 0x20 != 0 && d.errors == 0)                    // TCPCS good
        nic.w(R.ims, Bit.rxt0 | Bit.txdw | Bit.rxdmt0 | 0x8 | Bit.lsc)

        // The reply with checksum offload and IDE: TXDW after TIDV (8.192 µs).
        let reply = FrameBuilder.withPartialChecksum(FrameBuilder.e1000.addressed(to: FrameBuilder.e1000.sourceMAC).tcp(ack: 0, payload: Payload.counting(64)))
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x03, hdrlen: 0, mss: 0)
        nic.data(reply, dcmd: 0x01 | 0x02 | 0x08 | 0x80, popts: 0x02)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first?.bytes)
        #expect(FrameBuilder.transportChecksumValid(sent))
        #expect(!nic.irq)
        nic.machine.advance(microseconds: 9)                              // TIDV expired, but ITR
        #expect(!nic.irq)                                                 // (195 × 256 ns) since the RX one
        nic.machine.advance(microseconds: 41)
        #expect(nic.irq)
        #expect(nic.r(R.icr) & Bit.txdw != 0)
    }
}
