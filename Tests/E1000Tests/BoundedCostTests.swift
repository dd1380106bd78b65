import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

/// Issue 12's e1000 cases: a TDT write costs a bounded amount of work and memory,
/// whatever the ring holds.
@Suite struct E1000BoundedCostTests {
    static let eop: UInt8 = 0x01, ifcs: UInt8 = 0x02, rs: UInt8 = 0x08, tse: UInt8 = 0x04, dext: UInt8 = 0x20

    /// Case 1: legacy descriptors that never set EOP, TDT moved around the ring again and
    /// again. The packet's descriptor count saturates at the ring size instead of counting
    /// to 2^32 and trapping; the packet is dropped at EOP and the next one goes out.
    @Test func packetWithoutEndOfPacketNeverOverflowsItsCount() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 16)
        let buffer = nic.machine.allocator.alloc(size: 64)
        for i in 0 ..< 16 { nic.store(buffer.raw, at: nic.txRing.raw + UInt64(i * 16)); nic.store(UInt64(60) | UInt64(Self.ifcs | Self.rs) << 24, at: nic.txRing.raw + UInt64(i * 16) + 8) }
        for lap in 0 ..< 200 {
            nic.w(R.tdt, UInt32((lap * 15 + 15) % 16))
            #expect(nic.model.transmit.descriptorCount <= 16)
            #expect(nic.model.transmit.pendingWriteBacks.count <= 16)
        }
        #expect(nic.model.transmit.overflowed)
        #expect(nic.endpoint.sent.isEmpty)
        nic.txTail = nic.r(R.tdh)
        nic.legacy(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(46)), cmd: Self.eop | Self.ifcs | Self.rs) // ends (and drops) the overlong packet
        nic.legacy(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(46)), cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1)
    }

    /// Case 2: an open packet followed by a ring of context descriptors with RS. They count
    /// toward the ring-lap bound, so the write-back list never holds more than one ring,
    /// and a reset releases its storage.
    @Test func contextDescriptorsCannotGrowTheWriteBackList() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 16)
        nic.data(FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(46)), dcmd: Self.ifcs)          // opens a packet, no EOP
        for _ in 0 ..< 15 {
            nic.putTx(low: 0, high: UInt64(Self.dext | Self.rs) << 24) // context descriptor with RS
        }
        for lap in 0 ..< 200 {
            nic.w(R.tdt, UInt32((lap * 15 + 15) % 16))
            #expect(nic.model.transmit.pendingWriteBacks.count <= 16)
        }
        #expect(nic.txStatus(3) & 1 != 0) // written back, not held
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlRST)
        #expect(nic.model.transmit.pendingWriteBacks.capacity < 128) // released, back to its initial reserve
    }

    /// Case 3 on e1000: an MSS below Linux's smallest (8) is malformed and dropped
    /// (TSCTFC), not 60,000 one-byte segments.
    @Test func tsoBelowTheSmallestSegmentIsDropped() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 64)
        var header = Array(FrameBuilder.e1000.tcp(seq: 1000, ack: 0, flags: [.ack, .psh], payload: [])[0 ..< 54])
        header[16] = 0; header[17] = 0; header[24] = 0; header[25] = 0
        let payload = Payload.counting(60_000)
        TransmitTests().sendTSO(nic, header: header, payload: payload, ipv4: true, mss: 1)
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.r(R.tsctfc) == 1)
    }

    /// A TDT write over a full ring of large packets stops at the action budget and the
    /// rest follows from the I/O loop; every frame goes out, no action exceeds the budget.
    @Test func aTailWriteDefersWhatIsBeyondTheBudget() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 512)
        let frame = FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(8986))
        let buffer = nic.machine.allocator.alloc(size: UInt64(frame.count))
        try nic.machine.memory.writeBytes(frame, at: buffer)
        for _ in 0 ..< 500 { nic.putTx(low: buffer.raw, high: UInt64(frame.count) | UInt64(Self.eop | Self.ifcs | Self.rs) << 24) }
        let meter = nic.dev.function.cost
        meter.resetWorst()
        nic.kickTx()
        let first = nic.endpoint.takeSent().count
        #expect(first > 0 && first < 500)
        var turns = 0
        while nic.machine.loop.runQueuedWork() > 0 && turns < 100 { turns += 1 }
        #expect(first + nic.endpoint.takeSent().count == 500)
        #expect(nic.r(R.tdh) == nic.r(R.tdt))
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }
}
