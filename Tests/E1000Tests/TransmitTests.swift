import Testing
import VMMCore
import VMMTestKit
@testable import E1000

@Suite struct TransmitTests {
    static let eop: UInt8 = 0x01, ifcs: UInt8 = 0x02, ic: UInt8 = 0x04, tse: UInt8 = 0x04, rs: UInt8 = 0x08
    static let vle: UInt8 = 0x40, ide: UInt8 = 0x80
    static let ixsm: UInt8 = 0x01, txsm: UInt8 = 0x02

    @Test func legacyFrameGoesOutWithDoneWrittenBack() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.ims, Bit.txdw)
        let frame = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(100))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.map(\.bytes) == [frame])
        #expect(nic.endpoint.sent.first?.header == nil)
        #expect(nic.txStatus(0) & 1 == 1)
        #expect(nic.r(R.tdh) == 1)
        #expect(nic.irq)
        #expect(nic.r(R.icr) & (Bit.txdw | Bit.txqe) == Bit.txdw | Bit.txqe)
        #expect(nic.r(R.gptc) == 1 && nic.r(R.tpt) == 1)
        #expect(nic.r(R.gotcl) == UInt32(frame.count + 4))
    }

    @Test func packetAcrossDescriptorsWaitsForEOPAndPadsShortFrames() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.ethernet(type: 0x0806, payload: Payload.counting(28))        // 42 bytes
        nic.legacy(Array(frame[0 ..< 20]), cmd: Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.txStatus(0) == 0)                                        // DD waits for the packet
        nic.legacy(Array(frame[20...]), cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.map(\.bytes) == [frame + [UInt8](repeating: 0, count: 18)])   // PSP
        #expect(nic.txStatus(0) & 1 == 1 && nic.txStatus(1) & 1 == 1)
    }

    @Test func legacyChecksumInsertion() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.udp(payload: Payload.counting(77), id: 1)
        // Seed the field with the pseudo-header sum as a driver does for CHECKSUM_PARTIAL.
        let frame = FrameBuilder.withPartialChecksum(good)
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.ic | Self.rs, cso: 40, css: 34)
        nic.kickTx()
        #expect(nic.endpoint.sent.first?.bytes == good)
    }

    @Test func contextChecksumOffloadIPv4TCP() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        var frame = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(300))
        frame[24] = 0; frame[25] = 0                                          // IP checksum to insert
        frame = FrameBuilder.withPartialChecksum(frame)
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x03, hdrlen: 0, mss: 0)
        nic.data(Array(frame[0 ..< 54]), dcmd: Self.ifcs, popts: Self.ixsm | Self.txsm)
        nic.data(Array(frame[54...]), dcmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first?.bytes)
        #expect(FrameBuilder.ipv4HeaderValid(sent))
        #expect(FrameBuilder.transportChecksumValid(sent))
        #expect(sent == FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(300)))
    }

    /// Linux's e1000_tso: IP total length and checksum zeroed, TCP checksum seeded with
    /// the length-less pseudo-header sum, the payload in page-sized data descriptors.
    func sendTSO(_ nic: NIC, header: [UInt8], payload: [UInt8], ipv4: Bool, mss: Int, vlan: UInt16? = nil) {
        let hdrlen = header.count
        nic.context(ipcss: 14, ipcso: 24, ipcse: ipv4 ? 33 : 0, tucss: ipv4 ? 34 : 54, tucso: ipv4 ? 50 : 70, tucse: 0,
                    paylen: payload.count, tucmd: ipv4 ? 0x07 : 0x05, hdrlen: hdrlen, mss: mss)
        let tag: UInt8 = vlan == nil ? 0 : Self.vle
        nic.data(header, dcmd: Self.tse | Self.ifcs | tag, popts: (ipv4 ? Self.ixsm : 0) | Self.txsm, special: vlan ?? 0)
        var offset = 0
        while offset < payload.count {
            let n = min(4096, payload.count - offset)
            let last = offset + n == payload.count
            nic.data(Array(payload[offset ..< offset + n]), dcmd: Self.tse | Self.ifcs | tag | (last ? Self.eop | Self.rs : 0), special: vlan ?? 0)
            offset += n
        }
        nic.kickTx()
    }

    @Test func tso64KiBOverIPv4() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 64)
        let payload = Payload.counting(65_536 - 54, seed: 3)
        var header = Array(FrameBuilder.e1000.tcp(seq: 1000, ack: 0, flags: [.fin, .psh, .ack], payload: [])[0 ..< 54])   // ACK|PSH|FIN
        header[16] = 0; header[17] = 0; header[24] = 0; header[25] = 0
        sendTSO(nic, header: header, payload: payload, ipv4: true, mss: 1448)
        let sent = nic.endpoint.sent.map(\.bytes)
        #expect(sent.count == (payload.count + 1447) / 1448)
        for (i, segment) in sent.enumerated() {
            let start = i * 1448, end = min(start + 1448, payload.count)
            let last = end == payload.count
            let expected = FrameBuilder.e1000.tcp(seq: 1000 + UInt32(start), ack: 0, flags: last ? [.fin, .psh, .ack] : [.ack],
                                                  payload: Array(payload[start ..< end]), id: 0x1234 + UInt16(i))
            #expect(segment == expected, "segment \(i)")
            #expect(FrameBuilder.ipv4HeaderValid(segment) && FrameBuilder.transportChecksumValid(segment), "segment \(i) checksums")
        }
        #expect(nic.r(R.tsctc) == 1)
        #expect(nic.r(R.gptc) == UInt32(sent.count))
        #expect(nic.txStatus(Int(nic.txTail) - 1) & 1 == 1)
    }

    @Test func tso64KiBOverIPv6() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 64)
        let payload = Payload.counting(65_000, seed: 9)
        var header = Array(FrameBuilder.e1000.tcp(ipv6: true, seq: 0xFFFF_F000, ack: 0, flags: [.ack, .psh], payload: [])[0 ..< 74])
        header[18] = 0; header[19] = 0                                          // payload length 0
        header[70] = 0; header[71] = 0
        sendTSO(nic, header: header, payload: payload, ipv4: false, mss: 1428)
        let sent = nic.endpoint.sent.map(\.bytes)
        #expect(sent.count == (payload.count + 1427) / 1428)
        for (i, segment) in sent.enumerated() {
            let start = i * 1428, end = min(start + 1428, payload.count)
            let expected = FrameBuilder.e1000.tcp(ipv6: true, seq: 0xFFFF_F000 &+ UInt32(start), ack: 0,
                                                  flags: end == payload.count ? [.ack, .psh] : [.ack], payload: Array(payload[start ..< end]))
            #expect(segment == expected, "segment \(i)")
            #expect(FrameBuilder.transportChecksumValid(segment), "segment \(i) checksum")
        }
    }

    @Test func vlanInsertionNeedsVMEAndVLE() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(64))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.vle | Self.rs, special: 0x2123)
        nic.kickTx()
        #expect(nic.endpoint.takeSent().first?.bytes == frame)                    // VME off: no tag
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.vle | Self.rs, special: 0x2123)
        nic.kickTx()
        let tagged = Array(frame[0 ..< 12]) + [0x81, 0x00, 0x21, 0x23] + Array(frame[12...])
        #expect(nic.endpoint.takeSent().first?.bytes == tagged)
    }

    @Test func tsoWithVLANTagsEverySegment() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 64)
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        let payload = Payload.counting(5000)
        var header = Array(FrameBuilder.e1000.tcp(ack: 0, flags: [.ack, .psh], payload: [])[0 ..< 54])
        header[24] = 0; header[25] = 0
        sendTSO(nic, header: header, payload: payload, ipv4: true, mss: 1460, vlan: 0x0064)
        let sent = nic.endpoint.sent.map(\.bytes)
        #expect(sent.count == 4)
        for s in sent {
            #expect(Array(s[12 ..< 16]) == [0x81, 0x00, 0x00, 0x64])
            let untagged = Array(s[0 ..< 12]) + Array(s[16...])
            #expect(FrameBuilder.ipv4HeaderValid(untagged) && FrameBuilder.transportChecksumValid(untagged))
        }
    }

    @Test func transmitInterruptDelayWithIDE() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.ims, Bit.txdw)
        nic.w(R.tidv, 100); nic.w(R.tadv, 250)                                    // 102.4 µs, 256 µs
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.ifcs | Self.rs | Self.ide)
        nic.kickTx()
        #expect(!nic.irq)
        nic.machine.advance(microseconds: 100)
        #expect(!nic.irq)
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [2]), cmd: Self.eop | Self.ifcs | Self.rs | Self.ide)
        nic.kickTx()                                                             // TIDV restarts
        nic.machine.advance(microseconds: 100)
        #expect(!nic.irq)
        nic.machine.advance(microseconds: 60)                                     // TADV (256 µs) expires
        #expect(nic.irq)
        #expect(nic.r(R.icr) & Bit.txdw != 0)
        // Without IDE the interrupt is immediate.
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [3]), cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.irq)
    }

    @Test func noDescriptorsProcessedWhileTransmitterDisabled() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.tctl, 0)
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty && nic.r(R.tdh) == 0)
        nic.w(R.tctl, Bit.tctlEN)
        #expect(nic.endpoint.sent.count == 1 && nic.r(R.tdh) == 1)
    }
}
