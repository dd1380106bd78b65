import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

@Suite struct ReceiveTests {
    @Test(arguments: [60, 61, 64, 100, 127, 128, 255, 512, 1023, 1024, 1500, 1514])
    func framesOfEverySize(length: Int) throws {
        let nic = try NIC()
        nic.setUpReceive()
        let frame = FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(length - 14, seed: length))
        #expect(nic.endpoint.inject(frame))
        let (bytes, d) = try #require(nic.receiveNext())
        #expect(bytes == frame)
        #expect(d.length == length && d.eop)
        #expect(nic.r(R.gprc) == 1)
        #expect(nic.r(R.gorcl) == UInt32(length + 4))
    }

    @Test func shortFramesArePaddedAndCRCIsKeptWithoutSECRC() throws {
        let nic = try NIC()
        nic.setUpReceive(rctl: Bit.rctlEN | Bit.rctlBAM)
        let frame = FrameBuilder.e1000.ethernet(type: 0x0806, payload: Payload.counting(28))          // 42 bytes
        nic.endpoint.inject(frame)
        let (bytes, d) = try #require(nic.receiveNext())
        let padded = frame + [UInt8](repeating: 0, count: 18)
        let crc = FrameCheckSequence.crc32(padded)
        #expect(d.length == 64)
        #expect(bytes == padded + [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)])
        #expect(nic.r(R.prc64) == 1)
    }

    @Test(arguments: [60, 61, 67, 1514, 9017])
    func fcsMatchesABitwiseCRC(length: Int) throws {
        let nic = try NIC()
        nic.setUpReceive(count: 16, rctl: Bit.rctlEN | Bit.rctlLPE)
        let frame = FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(length - 14, seed: 5))
        nic.endpoint.inject(frame)
        let (bytes, _) = try #require(nic.receiveNext())
        let crc = FrameCheckSequence.crc32(frame)
        #expect(bytes == frame + [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)])
    }

    @Test func jumboFrameSpansDescriptors() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 16, bufferSize: 2048, rctl: Bit.rctlEN | Bit.rctlLPE | Bit.rctlSECRC)
        let frame = FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(9000 - 14))
        #expect(nic.endpoint.inject(frame))
        for i in 0 ..< 4 {
            let d = nic.rxDescriptor(i)
            #expect(d.done && !d.eop && d.length == 2048)
        }
        #expect(nic.rxDescriptor(4).eop && nic.rxDescriptor(4).length == 9000 - 4 * 2048)
        let (bytes, _) = try #require(nic.receiveNext())
        #expect(bytes == frame)
        #expect(nic.r(R.rdh) == 5)
    }

    @Test func bufferSizeExtensionGives16KiBBuffers() throws {
        let nic = try NIC()
        // BSEX with BSIZE=01: 16384-byte buffers.
        nic.setUpReceive(count: 8, bufferSize: 16_384, rctl: Bit.rctlEN | Bit.rctlLPE | Bit.rctlSECRC | Bit.rctlBSEX | 1 << 16)
        let frame = FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(16_000))
        nic.endpoint.inject(frame)
        #expect(nic.rxDescriptor(0).eop && nic.rxDescriptor(0).length == frame.count)
    }

    @Test func longFramesNeedLPE() throws {
        let nic = try NIC()
        nic.setUpReceive()
        #expect(nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(1600))))
        #expect(!nic.rxDescriptor(0).done)
        #expect(nic.r(R.roc) == 1)
        // 1514 + 4-byte tag is still a standard frame.
        nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x8100, payload: [0, 5, 0x88, 0xB5] + Payload.counting(1500)))
        #expect(nic.rxDescriptor(0).done)
    }

    @Test func addressFiltering() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 32, rctl: Bit.rctlEN | Bit.rctlSECRC)
        let other: [UInt8] = [0x02, 9, 9, 9, 9, 9]
        let multicast: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB]
        func delivered(_ dst: [UInt8]) -> Bool {
            let before = nic.r(R.rdh)
            nic.endpoint.inject(FrameBuilder.e1000.addressed(to: dst).ethernet(type: 0x88B5, payload: Payload.counting(50)))
            return nic.r(R.rdh) != before
        }
        #expect(delivered(FrameBuilder.e1000.destinationMAC))
        #expect(!delivered(other))
        #expect(!delivered(FrameBuilder.broadcast))                          // BAM clear
        #expect(!delivered(multicast))
        // A second exact address in RAL1/RAH1 with AV.
        nic.w(R.ral0 + 8, 0x0909_0902); nic.w(R.rah0 + 8, 0x8000_0909)
        #expect(delivered(other))
        nic.w(R.rah0 + 8, 0x0000_0909)                                  // AV clear
        #expect(!delivered(other))
        // MTA hash, MO=00: bits 47:36 of the address.
        let hash = Int(multicast[4] >> 4) | Int(multicast[5]) << 4
        nic.w(R.mta + UInt64(hash >> 5) * 4, 1 << UInt32(hash & 31))
        #expect(delivered(multicast))
        nic.w(R.rctl, nic.r(R.rctl) | 3 << 12)                          // MO=11 moves the hash
        #expect(!delivered(multicast))
        nic.w(R.rctl, Bit.rctlEN | Bit.rctlSECRC | Bit.rctlBAM)
        #expect(delivered(FrameBuilder.broadcast))
        nic.w(R.rctl, Bit.rctlEN | Bit.rctlSECRC | Bit.rctlMPE)
        #expect(delivered([0x01, 2, 3, 4, 5, 6]) && !delivered(other))
        nic.w(R.rctl, Bit.rctlEN | Bit.rctlSECRC | Bit.rctlUPE)
        #expect(delivered(other))
        #expect(nic.r(R.bprc) == 1 && nic.r(R.mprc) == 2)
    }

    @Test func vlanStrippingAndFiltering() throws {
        let nic = try NIC()
        nic.setUpReceive(rctl: Bit.rctlEN | Bit.rctlSECRC | Bit.rctlVFE)
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        let inner = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(100))
        let tagged = Array(inner[0 ..< 12]) + [0x81, 0x00, 0xA0, 0x2A] + Array(inner[12...])   // PCP 5, VID 42
        nic.endpoint.inject(tagged)
        #expect(!nic.rxDescriptor(0).done)                              // VID 42 not in VFTA
        nic.w(R.vfta + 4, 1 << 10)                                      // VID 42 = word 1, bit 10
        nic.endpoint.inject(tagged)
        let (bytes, d) = try #require(nic.receiveNext())
        #expect(bytes == inner)
        #expect(d.status & 0x08 != 0 && d.special == 0xA02A)
        // Without VME the tag stays in the frame.
        nic.w(R.ctrl, nic.r(R.ctrl) & ~Bit.ctrlVME)
        nic.endpoint.inject(tagged)
        let (raw, d2) = try #require(nic.receiveNext())
        #expect(raw == tagged && d2.status & 0x08 == 0)
    }

    @Test func vetOtherThan8100TurnsTagHandlingOff() throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.setUpTransmit()
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        nic.w(0x38, 0)                                                  // VET, as e1000_init_hw leaves it on an 82540
        let inner = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(20))
        let tagged = Array(inner[0 ..< 12]) + [0x81, 0x00, 0x00, 0x2A] + Array(inner[12...])
        nic.endpoint.inject(tagged)
        #expect(try #require(nic.receiveNext()).bytes == tagged)
        nic.legacy(inner, cmd: 0x01 | 0x40 | 0x08, special: 5)
        nic.kickTx()
        #expect(nic.endpoint.takeSent().first?.bytes == inner)
        nic.w(0x38, 0x8100)                                             // e1000_reset: ETHERNET_IEEE_VLAN_TYPE
        nic.endpoint.inject(tagged)
        #expect(try #require(nic.receiveNext()).bytes == inner)
    }

    @Test func receiveChecksumStatus() throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(200)))
        let good = try #require(nic.receiveNext()).last
        #expect(good.status & 0x60 == 0x60 && good.errors == 0 && good.status & 0x04 == 0)
        var bad = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(200))
        bad[60] ^= 0xFF
        nic.endpoint.inject(bad)
        let b = try #require(nic.receiveNext()).last
        #expect(b.errors & 0x20 != 0 && b.errors & 0x40 == 0)
        nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(50)))
        #expect(try #require(nic.receiveNext()).last.status & 0x04 != 0)     // IXSM: nothing checked
        nic.w(R.rxcsum, 0)
        nic.endpoint.inject(bad)
        #expect(try #require(nic.receiveNext()).last.errors == 0)
    }

    /// The descriptor's packet checksum is the ones'-complement sum from PCSS to the end
    /// (§3.2.9), whether PCSS is before the TCP header (the segment's sum is reused), at an
    /// odd offset, or inside the segment; and over the padding of a short frame.
    @Test(arguments: [0, 15, 40, 57])
    func packetChecksumStartsAtPCSS(pcss: Int) throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.w(R.rxcsum, 1 << 9 | 1 << 8 | UInt32(pcss))
        for frame in [FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(301)),
                      FrameBuilder.e1000.udp(payload: Payload.counting(3))] {
            nic.endpoint.inject(frame)
            let got = try #require(nic.receiveNext())
            var expected = InternetChecksum()
            if pcss < got.bytes.count { expected.add(Array(got.bytes[pcss...])) }
            #expect(got.last.checksum == expected.folded)
            #expect(got.last.status & 0x60 == 0x60 && got.last.errors == 0)
        }
    }

    /// The checksums are summed while the frame is copied, buffer by buffer: with 256-byte
    /// buffers the TCP segment and the PCSS range break at many places, some at an odd
    /// offset into the summed range (PCSS 57), and each sum still covers every byte once.
    @Test(arguments: [0, 15, 40, 57])
    func checksumsSummedAcrossSmallBuffers(pcss: Int) throws {
        let nic = try NIC()
        nic.setUpReceive(count: 32, bufferSize: 256, rctl: Bit.rctlEN | Bit.rctlSECRC | 3 << 16)
        nic.w(R.rxcsum, 1 << 9 | 1 << 8 | UInt32(pcss))
        var bad = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(1460))
        bad[1000] ^= 0x5A
        for (frame, good) in [(FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(1460)), true),
                              (FrameBuilder.e1000.udp(payload: Payload.counting(1001)), true), (bad, false)] {
            #expect(nic.endpoint.inject(frame))
            let got = try #require(nic.receiveNext())
            #expect(got.bytes == frame)
            var expected = InternetChecksum()
            expected.add(Array(got.bytes[pcss...]))
            #expect(got.last.checksum == expected.folded)
            #expect(got.last.status & 0x60 == 0x60)
            #expect(got.last.errors == (good ? 0 : 0x20))
        }
    }

    @Test func noFreeDescriptorsHoldsTheFrameUntilRDTMoves() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 8, post: 2)                             // two buffers given
        let f = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(10))
        #expect(nic.endpoint.inject(f) && nic.endpoint.inject(f))
        #expect(!nic.endpoint.inject(f))                                // back-pressure, not a drop
        #expect(nic.r(R.rnbc) == 1 && nic.r(R.mpc) == 0)
        #expect(nic.r(R.tpr) == 2)                                      // the held frame is not counted yet
        let resumes = nic.endpoint.resumeCount
        nic.w(R.rdt, 5)
        #expect(nic.endpoint.resumeCount == resumes + 1)
        #expect(nic.endpoint.inject(f))
    }

    @Test func minimumThresholdRaisesRXDMT0() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 8)                                      // 7 free, RDMTS = 1/2 → at 4 free
        nic.w(R.ims, Bit.rxdmt0)
        let f = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(10))
        for _ in 0 ..< 2 { nic.endpoint.inject(f) }
        #expect(!nic.irq)
        nic.endpoint.inject(f)
        #expect(nic.irq && nic.r(R.icr) & Bit.rxdmt0 != 0)
    }

    /// A stopped receiver leaves the frame with the backend (which stops reading) and asks
    /// for it again when RCTL is written; a down link drops it.
    @Test func stoppedReceiverHoldsAndDownLinkDropsSilently() throws {
        let nic = try NIC()
        nic.setUpReceive(rctl: 0)
        #expect(!nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1])))
        #expect(!nic.rxDescriptor(0).done && nic.r(R.gprc) == 0 && nic.r(R.tpr) == 0)
        #expect(nic.endpoint.resumeCount == 0)
        nic.w(R.rctl, Bit.rctlEN | Bit.rctlSECRC)
        #expect(nic.endpoint.resumeCount == 1)
        nic.endpoint.setLink(up: false)
        #expect(nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1])))
        #expect(!nic.rxDescriptor(0).done)
    }
}

/// Rings the device reads through a host view of the whole ring when it lies in one RAM
/// region, and word by word through guest memory when it spans two adjacent ones; the
/// guest sees no difference.
@Suite struct RingAcrossRegionsTests {
    static let boundary: UInt64 = 16 << 20

    private func nic() throws -> NIC {
        try NIC(memory: GuestMemory(layout: [(0, Self.boundary), (Self.boundary, 16 << 20)]))
    }

    @Test func aReceiveRingAcrossTwoRegionsDeliversEveryFrame() throws {
        let nic = try nic()
        nic.setUpReceive(count: 8)
        // Descriptors 0…3 below the boundary, 4…7 above it.
        let ring = Self.boundary - 64
        for (i, b) in nic.rxBuffers.enumerated() {
            nic.store(b.raw, at: ring + UInt64(i * 16))
            nic.store(0, at: ring + UInt64(i * 16) + 8)
        }
        nic.rxRing = GuestAddress(ring)
        nic.w(R.rdbal, UInt32(truncatingIfNeeded: ring)); nic.w(R.rdbah, 0)
        nic.w(R.rdh, 0); nic.w(R.rdt, 7)
        for n in 0 ..< 6 {
            let frame = FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(100 + n, seed: n))
            #expect(nic.endpoint.inject(frame))
            let (bytes, d) = try #require(nic.receiveNext())
            #expect(bytes == frame && d.eop)
        }
        #expect(nic.r(R.rdh) == 6)
    }

    /// A receive buffer that starts in one region and ends in the next: the frame is
    /// copied in two pieces and its TCP checksum summed across both.
    @Test func aReceiveBufferAcrossTwoRegionsIsCopiedAndSummedWhole() throws {
        let nic = try nic()
        nic.setUpReceive(count: 8)
        let buffer = Self.boundary - 301
        nic.store(buffer, at: nic.rxRing.raw)
        nic.rxBuffers[0] = GuestAddress(buffer)
        let frame = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(1000))
        #expect(nic.endpoint.inject(frame))
        let (bytes, d) = try #require(nic.receiveNext())
        #expect(bytes == frame && d.eop && d.status & 0x60 == 0x60 && d.errors == 0)
    }

    @Test func aTransmitRingAcrossTwoRegionsSendsEveryPacket() throws {
        let nic = try nic()
        nic.setUpTransmit(count: 8)
        let ring = Self.boundary - 64
        nic.txRing = GuestAddress(ring)
        nic.w(R.tdbal, UInt32(truncatingIfNeeded: ring)); nic.w(R.tdh, 0); nic.w(R.tdt, 0)
        let frames = (0 ..< 6).map { FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(100 + $0, seed: $0)) }
        for f in frames { nic.legacy(f) }
        nic.kickTx()
        #expect(nic.endpoint.takeSent().map(\.bytes) == frames)
        #expect((0 ..< 6).allSatisfy { nic.txStatus($0) & 1 != 0 })
    }
}
