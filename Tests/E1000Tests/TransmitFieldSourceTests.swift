import Testing
import VMMCore
import VMMTestKit
@testable import E1000

/// Which descriptor of a packet each transmit field is read from, and what a bad range
/// costs (Intel 8254x SDM §3.3.3, §3.3.6, §3.3.7.1; found by a hostile read). Linux
/// copies the same fields into every descriptor of a packet, so only other drivers tell.
@Suite struct TransmitFieldSourceTests {
    static let eop = TransmitTests.eop, ifcs = TransmitTests.ifcs, ic = TransmitTests.ic, tse = TransmitTests.tse
    static let rs = TransmitTests.rs, vle = TransmitTests.vle, ixsm = TransmitTests.ixsm, txsm = TransmitTests.txsm

    /// §3.3.3: "CSS must be set in the first descriptor of the packet"; IC and CSO count
    /// on the EOP descriptor.
    @Test func legacyChecksumStartComesFromTheFirstDescriptor() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.udp(payload: Payload.counting(77), id: 1)
        let frame = FrameBuilder.withPartialChecksum(good)
        nic.legacy(Array(frame[0 ..< 42]), cmd: Self.ifcs, css: 34)
        nic.legacy(Array(frame[42...]), cmd: Self.eop | Self.ifcs | Self.ic | Self.rs, cso: 40, css: 0)
        nic.kickTx()
        #expect(nic.endpoint.sent.first?.bytes == good)
    }

    /// §3.3.3.1: "IC is ignored if CSS ≥ length": nothing is written at CSO.
    @Test func legacyChecksumStartAtTheEndIsIgnored() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).ethernet(type: 0x88B5, payload: Payload.counting(86))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.ic | Self.rs, cso: 20, css: UInt8(frame.count))
        nic.kickTx()
        #expect(nic.endpoint.sent.first?.bytes == frame)
    }

    /// §3.3.6: an IP checksum range that does not fit costs the IP checksum only; the
    /// TCP checksum is still inserted.
    @Test func aBadIPRangeLeavesTheTCPChecksumInserted() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(300))
        let frame = FrameBuilder.withPartialChecksum(good)
        // IPCSE before IPCSS: no IP range to sum.
        nic.context(ipcss: 14, ipcso: 24, ipcse: 10, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x03, hdrlen: 0, mss: 0)
        nic.data(Array(frame[0 ..< 54]), dcmd: Self.ifcs, popts: Self.ixsm | Self.txsm)
        nic.data(Array(frame[54...]), dcmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first?.bytes)
        #expect(FrameBuilder.transportChecksumValid(sent))
        #expect(sent == good)
    }

    /// §3.3.7.1: with TSE, VLE and the tag are valid only in the first data descriptor.
    @Test func tsoTakesTheVLANTagFromTheFirstDataDescriptor() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 64)
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        var header = Array(FrameBuilder.e1000.tcp(ack: 0, flags: [.ack, .psh], payload: [])[0 ..< 54])
        header[24] = 0; header[25] = 0
        let payload = Payload.counting(3000)
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: payload.count, tucmd: 0x07, hdrlen: 54, mss: 1460)
        nic.data(header, dcmd: Self.tse | Self.ifcs | Self.vle, popts: Self.ixsm | Self.txsm, special: 0x0123)
        nic.data(payload, dcmd: Self.tse | Self.ifcs | Self.eop | Self.rs)   // no VLE, no tag here
        nic.kickTx()
        let sent = nic.endpoint.sent.map(\.bytes)
        #expect(sent.count == 3)
        #expect(sent.allSatisfy { Array($0[12 ..< 16]) == [0x81, 0x00, 0x01, 0x23] })
    }

    /// A TCP/IPv4 TSO packet of `payload` bytes sent in PHY loopback, as Linux's e1000_tso
    /// builds it (sendTSO), with `receive` descriptors posted; returns the worst action.
    private func loopbackTSO(payload: Int, mss: Int, receive: Int) throws -> (NIC, ActionCost) {
        let nic = try NIC()
        nic.setUpReceive(count: receive)
        nic.setUpTransmit(count: 128)
        nic.w(R.mdic, 1 << 26 | 1 << 21 | 0 << 16 | 0x4140) // PHY control: loopback
        var header = Array(FrameBuilder.e1000.tcp(ack: 0, flags: [.ack], payload: [])[0 ..< 54])
        header[16] = 0; header[17] = 0; header[24] = 0; header[25] = 0
        let meter = nic.dev.function.cost
        meter.resetWorst()
        TransmitTests().sendTSO(nic, header: header, payload: Payload.counting(payload), ipv4: true, mss: mss)
        #expect(nic.endpoint.sent.isEmpty)
        return (nic, meter.worst)
    }

    @Test func loopbackTSOOfFewSegmentsIsReceived() throws {
        let (nic, _) = try loopbackTSO(payload: 4000, mss: 1460, receive: 16)
        var received = 0
        while nic.receiveNext() != nil { received += 1 }
        #expect(received == 3)
        #expect(nic.r(R.mpc) == 0)
    }

    /// In PHY loopback a TSO packet's segments are received inside the same TDT write; a
    /// packet of more than `loopbackSegmentLimit` is lost whole as from an overrun FIFO
    /// (MPC, RXO) before any segment is built, and the write stays within the action
    /// budget (a 256 KiB packet at MSS 8 received 32,768 frames on top of sending them).
    @Test func loopbackTSOStaysWithinTheActionBudget() throws {
        let (nic, worst) = try loopbackTSO(payload: 200_000, mss: 8, receive: 512)
        #expect(worst.fits(ActionCostMeter.defaultBudget), "worst action: \(worst)")
        #expect(nic.r(R.mpc) == 25_000)
        #expect(nic.receiveNext() == nil)
        #expect(nic.errors(.loopbackSegmentsLost) == 1)
    }
}
