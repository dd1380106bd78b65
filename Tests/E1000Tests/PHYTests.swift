import Testing
import VMMTestKit
@testable import E1000

@Suite struct PHYTests {
    func mdioRead(_ nic: NIC, _ reg: UInt32, phy: UInt32 = 1) -> UInt32 {
        nic.w(R.mdic, 2 << 26 | phy << 21 | reg << 16)
        return nic.r(R.mdic)
    }

    @Test func identifiesAsM88E1011() throws {
        let nic = try NIC()
        let id1 = mdioRead(nic, 2), id2 = mdioRead(nic, 3)
        #expect(id1 & (1 << 28) != 0)                                   // ready
        #expect((id1 & 0xFFFF) << 16 | (id2 & 0xFFF0) == 0x0141_0C20)    // M88E1011_I_PHY_ID
    }

    @Test func autonegotiationCompletesWithLink() throws {
        let nic = try NIC()
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0 << 16 | 0x1340)            // AN enable + restart
        #expect(mdioRead(nic, 0) & 0x0200 == 0)                         // restart self-clears
        let bmsr = mdioRead(nic, 1) & 0xFFFF
        #expect(bmsr & 0x24 == 0x24)                                    // link, AN complete
        #expect(mdioRead(nic, 5) & 0xFFFF != 0)                         // partner ability
        #expect(mdioRead(nic, 17) & 0xAC00 == 0xAC00)                   // 1000/full/resolved/link
        #expect(mdioRead(nic, 10) & 0x3C00 == 0x3C00)
    }

    @Test func writesAreStoredAndIDsAreReadOnly() throws {
        let nic = try NIC()
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 16 << 16 | 0x0808)
        #expect(mdioRead(nic, 16) & 0xFFFF == 0x0808)
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 2 << 16 | 0xFFFF)
        #expect(mdioRead(nic, 2) & 0xFFFF == 0x0141)
    }

    @Test func wrongPHYAddressSetsError() throws {
        let nic = try NIC()
        let v = mdioRead(nic, 2, phy: 2)
        #expect(v & (1 << 30) != 0 && v & (1 << 28) != 0)
        #expect(nic.errors(.mdicBadPHYAddress) == 1)
    }

    @Test func completionInterruptWhenAsked() throws {
        let nic = try NIC()
        nic.w(R.ims, Bit.mdac)
        nic.w(R.mdic, 1 << 29 | 2 << 26 | 1 << 21 | 1 << 16)
        #expect(nic.irq)
        #expect(nic.r(R.icr) & Bit.mdac != 0)
        #expect(!nic.irq)
    }

    @Test func powerDownTakesTheLinkDownWithLSC() throws {
        let nic = try NIC()
        nic.w(R.ims, Bit.lsc)
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0x1940)                        // BMCR power down
        #expect(nic.r(R.status) & 2 == 0)
        #expect(nic.r(R.icr) & Bit.lsc != 0)
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0x1140)
        #expect(nic.r(R.status) & 2 == 2)
        #expect(nic.r(R.icr) & Bit.lsc != 0)
    }
}
