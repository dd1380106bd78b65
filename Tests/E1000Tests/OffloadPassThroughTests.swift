import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

/// A backend that completes offloads itself (TAP with a virtio-net header) gets TSO and
/// checksum requests whole; expanding them in software must give exactly what the
/// device's own software path sends to a backend without offloads.
@Suite struct OffloadPassThroughTests {
    static func offloadingNIC() throws -> NIC {
        try NIC(endpoint: InMemoryEndpoint(capabilities: BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6])))
    }

    /// What a kernel behind the TAP would put on the wire.
    static func expand(_ sent: InMemoryEndpoint.SentFrame) throws -> [[UInt8]] {
        guard let header = sent.header else { return [sent.bytes] }
        let buffer = FrameScratchBuffer()
        var out: [[UInt8]] = []
        try sent.bytes.withUnsafeBytes { b in
            try SoftwareOffload.complete([b], header: header, maxFrameSize: 9000, buffer: buffer.bytes) { out.append(Array($0)) }
        }
        return out
    }

    func tsoHeader(ipv4: Bool) -> [UInt8] {
        if ipv4 {
            var h = Array(FrameBuilder.e1000.tcp(seq: 77, ack: 0, flags: [.fin, .psh, .ack], payload: [])[0 ..< 54])
            h[16] = 0; h[17] = 0; h[24] = 0; h[25] = 0
            return h
        }
        var h = Array(FrameBuilder.e1000.tcp(ipv6: true, seq: 77, ack: 0, flags: [.fin, .psh, .ack], payload: [])[0 ..< 74])
        h[18] = 0; h[19] = 0; h[70] = 0; h[71] = 0
        return h
    }

    @Test(arguments: [true, false])
    func tsoGoesWholeAndExpandsToTheSameSegments(ipv4: Bool) throws {
        let payload = Payload.counting(60_000, seed: 1)
        let offloading = try Self.offloadingNIC(), plain = try NIC()
        for nic in [offloading, plain] {
            nic.setUpTransmit(count: 64)
            TransmitTests().sendTSO(nic, header: tsoHeader(ipv4: ipv4), payload: payload, ipv4: ipv4, mss: 1448)
        }
        let sent = try #require(offloading.endpoint.sent.first)
        #expect(offloading.endpoint.sent.count == 1)
        let header = try #require(sent.header)
        let hdrlen = ipv4 ? 54 : 74
        #expect(header.gsoType == (ipv4 ? VirtioNetHeader.GSOType.tcpv4 : .tcpv6).rawValue)
        #expect(header.flags == VirtioNetHeader.needsChecksum)
        #expect(Int(header.headerLength) == hdrlen && header.gsoSize == 1448)
        #expect(Int(header.checksumStart) == hdrlen - 20 && header.checksumOffset == 16)
        let f = sent.bytes
        #expect(f.count == hdrlen + payload.count)
        // Lengths of the whole packet, and the TCP field seeded with the full pseudo-header.
        let l4 = f.count - (hdrlen - 20)
        if ipv4 {
            #expect(Int(f.be16(16)) == f.count - 14 && FrameBuilder.ipv4HeaderValid(f))
            #expect(f.be16(50) == FrameBuilder.pseudoHeaderSum(f, proto: 6, length: l4))
        } else {
            #expect(Int(f.be16(18)) == f.count - 54)
            #expect(f.be16(70) == FrameBuilder.pseudoHeaderSum(f, proto: 6, length: l4))
        }
        #expect(try Self.expand(sent) == plain.endpoint.sent.map(\.bytes))
        #expect(offloading.r(R.tsctc) == 1)
        #expect(offloading.r(R.gptc) == plain.r(R.gptc))
        #expect(offloading.r(R.gotcl) == plain.r(R.gotcl))
    }

    /// `good` as Linux's e1000 hands over a CHECKSUM_PARTIAL TCP packet: the IPv4 header
    /// checksum zeroed, the TCP one seeded, a context asking for IXSM and TXSM.
    func sendWithChecksumRequest(_ good: [UInt8], on nic: NIC) {
        var frame = FrameBuilder.withPartialChecksum(good)
        frame[24] = 0; frame[25] = 0
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x03, hdrlen: 0, mss: 0)
        nic.data(frame, dcmd: 0x0B, popts: 0x03)
        nic.kickTx()
    }

    @Test func checksumRequestGoesAsNeedsChecksum() throws {
        let nic = try Self.offloadingNIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(300))
        sendWithChecksumRequest(good, on: nic)
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.header == VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16))
        #expect(FrameBuilder.ipv4HeaderValid(sent.bytes))                      // IXSM done by the device
        #expect(try Self.expand(sent) == [good])
        #expect(sent.segmentCount == 2)                                         // the head it rewrote, then guest memory
    }

    /// TXSM alone (what Linux's e1000_tx_csum asks for) changes nothing in the packet
    /// here: it goes from guest memory with the request for the backend, nothing copied.
    @Test func aChecksumRequestAloneCopiesNothing() throws {
        let nic = try Self.offloadingNIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(1000))
        let frame = FrameBuilder.withPartialChecksum(good)
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x03, hdrlen: 0, mss: 0)
        nic.data(frame, dcmd: 0x0B, popts: 0x02)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.header == VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16))
        #expect(sent.segmentCount == 1)
        #expect(try Self.expand(sent) == [good])
    }

    /// A 54-byte TCP ACK with TXSM and TCTL.PSP: the backend would send it as it is, so it
    /// takes the software path, which sums and pads it to 60 bytes (§13.4.33). It went
    /// out unpadded with a header.
    @Test func aShortPacketThatPSPPadsTakesTheSoftwarePath() throws {
        let nic = try Self.offloadingNIC()
        nic.setUpTransmit()   // TCTL.EN | PSP
        let good = FrameBuilder.e1000.tcp(ack: 0, payload: [])
        #expect(good.count == 54)
        sendWithChecksumRequest(good, on: nic)
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.header == nil)
        #expect(sent.bytes == good + [UInt8](repeating: 0, count: 6))
    }

    @Test func vlanTagShiftsTheHeaderOffsets() throws {
        let nic = try Self.offloadingNIC()
        nic.setUpTransmit(count: 64)
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        TransmitTests().sendTSO(nic, header: tsoHeader(ipv4: true), payload: Payload.counting(5000), ipv4: true, mss: 1000, vlan: 7)
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.header?.headerLength == 58 && sent.header?.checksumStart == 38)
        #expect(Array(sent.bytes[12 ..< 16]) == [0x81, 0, 0, 7])
        let segments = try Self.expand(sent)
        #expect(segments.count == 5)
        for s in segments {
            let untagged = Array(s[0 ..< 12]) + Array(s[16...])
            #expect(FrameBuilder.transportChecksumValid(untagged) && FrameBuilder.ipv4HeaderValid(untagged))
        }
    }

    @Test func framesTooBigForTheBackendOrMismatchedContextsUseTheSoftwarePath() throws {
        let nic = try Self.offloadingNIC()
        nic.setUpTransmit(count: 64)
        TransmitTests().sendTSO(nic, header: tsoHeader(ipv4: true), payload: Payload.counting(65_536 - 54), ipv4: true, mss: 1448)
        #expect(nic.endpoint.takeSent().allSatisfy { $0.header == nil && $0.bytes.count <= 1514 })
        // A context whose TUCSS disagrees with the headers: not passed through.
        let header = tsoHeader(ipv4: true)
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 38, tucso: 54, tucse: 0, paylen: 2000, tucmd: 0x07, hdrlen: 58, mss: 1000)
        nic.data(header + Payload.counting(2000), dcmd: 0x04 | 0x0B, popts: 3)
        nic.kickTx()
        #expect(nic.endpoint.sent.allSatisfy { $0.header == nil })
    }
}
