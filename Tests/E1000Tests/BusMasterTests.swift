import Testing
import VMMCore
import VMMTestKit
@testable import E1000

/// Without Bus Master Enable the function cannot reach memory (PCI 3.0 §6.2.2): no
/// descriptor fetch, no frame written; turning it on lets the same ring go out.
@Suite struct BusMasterTests {
    @Test func noRingDMAWithoutBusMastering() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.setUpReceive()
        let command = nic.dev.configRead(PCIConfigOffset.command, size: 2)
        nic.dev.configWrite(PCIConfigOffset.command, size: 2, value: command & ~UInt32(PCICommand.busMaster.rawValue))
        nic.legacy(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(46)), cmd: 0x0B)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.r(R.tdh) == 0)
        _ = nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(46)))
        #expect(nic.receiveNext() == nil)
        // Turning bus mastering on fetches what was queued, with no TDT write after it.
        nic.dev.configWrite(PCIConfigOffset.command, size: 2, value: command)
        #expect(nic.endpoint.sent.count == 1)
        #expect(nic.r(R.tdh) == 1)
        // A byte write to the command register's low half does the same.
        nic.dev.configWrite(PCIConfigOffset.command, size: 2, value: command & ~UInt32(PCICommand.busMaster.rawValue))
        nic.legacy(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(46)), cmd: 0x0B)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1)
        nic.dev.configWrite(PCIConfigOffset.command, size: 1, value: command & 0xFF)
        #expect(nic.endpoint.sent.count == 2)
    }
}
