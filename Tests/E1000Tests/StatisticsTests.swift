import Testing
import VMMTestKit
@testable import E1000

@Suite struct StatisticsTests {
    @Test func countersCountAndClearOnRead() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 16, rctl: Bit.rctlEN | Bit.rctlSECRC | Bit.rctlBAM)
        nic.setUpTransmit()
        for n in [60, 100, 1514] { nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(n - 14))) }
        nic.endpoint.inject(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(50)))
        nic.endpoint.inject(FrameBuilder.e1000.addressed(to: [2, 3, 4, 5, 6, 7]).ethernet(type: 0x88B5, payload: Payload.counting(50)))   // filtered
        #expect(nic.r(R.gprc) == 4)
        #expect(nic.r(R.tpr) == 5)                                       // filtered frames are received too
        #expect(nic.r(R.bprc) == 1)
        #expect(nic.r(R.prc64) == 1 && nic.r(R.prc1522) == 1)
        #expect(nic.r(R.gprc) == 0)                                      // read-to-clear
        // 64-bit octet counter: low reads keep it, the high read clears both.
        let octets = UInt32(64 + 104 + 1518 + 68)
        #expect(nic.r(R.gorcl) == octets)
        #expect(nic.r(R.gorcl) == octets)
        #expect(nic.r(R.gorch) == 0)
        #expect(nic.r(R.gorcl) == 0)

        nic.legacy(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x0806, payload: Payload.counting(28)), cmd: 0x0B)
        nic.legacy(FrameBuilder.e1000.addressed(to: [1, 0, 0x5E, 0, 0, 1]).ethernet(type: 0x0800, payload: Payload.counting(200)), cmd: 0x0B)
        nic.kickTx()
        #expect(nic.r(R.gptc) == 2 && nic.r(R.tpt) == 2)
        #expect(nic.r(R.bptc) == 1 && nic.r(R.mptc) == 1)
        #expect(nic.r(R.ptc64) == 1)
        #expect(nic.r(R.gotcl) == UInt32(64 + 218))
        #expect(nic.r(R.gotch) == 0 && nic.r(R.gotcl) == 0)
    }

    @Test func resetClearsCounters() throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        nic.w(R.ctrl, Bit.ctrlRST)
        #expect(nic.r(R.gprc) == 0 && nic.r(R.tpr) == 0)
    }
}
