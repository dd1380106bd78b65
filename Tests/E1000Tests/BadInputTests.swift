import Testing
import VMMCore
import VMMTestKit
@testable import E1000

/// A hostile or broken driver: the device counts, logs, and carries on.
@Suite struct BadInputTests {
    static let eop: UInt8 = 0x01, rs: UInt8 = 0x08, tse: UInt8 = 0x04

    @Test(arguments: [(UInt32(0xF000_0000), UInt32(0)),           // the PCI hole
                      (UInt32(0x0200_0000), UInt32(0)),            // just past the 32 MiB of RAM
                      (UInt32(0xFFFF_FF80), UInt32(0xFFFF_FFFF))]) // wraps past 2^64
    func receiveRingOutsideRAM(low: UInt32, high: UInt32) throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.w(R.rctl, 0)
        nic.w(R.rdbal, low); nic.w(R.rdbah, high)
        nic.w(R.rctl, Bit.rctlEN | Bit.rctlSECRC)
        #expect(nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1])))
        #expect(nic.r(R.mpc) == 1)
        #expect(nic.errors(.receiveRingInvalid) == 1)
    }

    @Test func transmitRingOutsideRAM() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.tctl, 0)
        nic.w(R.tdbal, 0xFEC0_0000)
        nic.w(R.tctl, Bit.tctlEN)
        nic.w(R.tdt, 3)
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.transmitRingInvalid) >= 1)
    }

    @Test func ringLengthsThatAreNotMultiplesOf128OrZero() throws {
        let nic = try NIC()
        nic.w(R.rdlen, 200)
        #expect(nic.r(R.rdlen) == 128)
        nic.w(R.tdlen, 100)
        #expect(nic.r(R.tdlen) == 0)
        #expect(nic.errors(.ringLengthNotMultipleOf128) == 2)
        nic.w(R.tctl, Bit.tctlEN)
        nic.w(R.tdt, 1)
        #expect(nic.errors(.transmitRingInvalid) >= 1)
        nic.setUpReceive()
        nic.w(R.rdlen, 0)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        #expect(nic.errors(.receiveRingInvalid) == 1)
    }

    @Test func headAndTailBeyondTheRing() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 8)
        nic.w(R.rdt, 100)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        nic.w(R.rdt, 3); nic.w(R.rdh, 0xFFFF)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        #expect(nic.errors(.receiveRingInvalid) == 2)
        #expect(nic.errors(.headWrittenWhileEnabled) == 1)
        nic.setUpTransmit(count: 8)
        nic.w(R.tdt, 9)
        #expect(nic.errors(.transmitRingInvalid) == 1)
        #expect(nic.r(R.tdh) == 0)
    }

    /// VLE on a packet too short to hold the addresses the tag goes after (PSP off, so
    /// nothing pads it first): dropped and counted as such (it was counted as an empty packet).
    @Test func vlanInsertionIntoATooShortPacketIsCountedAsSuch() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        nic.w(R.tctl, Bit.tctlEN)   // without PSP: the packet stays 8 bytes
        nic.legacy([1, 2, 3, 4, 5, 6, 7, 8], cmd: Self.eop | Self.rs | 0x40, special: 5)   // VLE
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.transmitVLANInsertionImpossible) == 1 && nic.errors(.transmitPacketEmpty) == 0)
    }

    @Test func zeroLengthAndHugeTransmitDescriptors() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.legacy([], cmd: Self.eop | Self.rs)                        // a 0-byte packet
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty && nic.errors(.transmitPacketEmpty) == 1)
        #expect(nic.txStatus(0) & 1 == 1)                               // still completed
        // DTALEN of 1 MiB - 1 pointing at RAM: larger than any packet the device assembles.
        nic.putTx(low: 0x10_0000, high: 0xF_FFFF | 1 << 20 | UInt64(0x20 | Self.eop | Self.rs) << 24)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty && nic.errors(.transmitPacketTooLarge) == 1)
        #expect(nic.txStatus(1) & 1 == 1)
        // Many huge descriptors without EOP: dropped at the end, never buffered without bound.
        for _ in 0 ..< 6 { nic.putTx(low: 0x10_0000, high: 0xF_FFFF | 1 << 20 | UInt64(0x20 | Self.rs) << 24) }
        nic.putTx(low: 0x10_0000, high: 64 | 1 << 20 | UInt64(0x20 | Self.eop | Self.rs) << 24)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty && nic.errors(.transmitPacketTooLarge) == 2)
        #expect(nic.r(R.tdh) == nic.txTail)
    }

    /// Without TSO a packet is at most 16,288 bytes (SDM §3.3.3, Table 3-9); a 256 KiB
    /// one went out whole.
    @Test func packetsWithoutTSOStopAtTheManualsLimit() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.tcp(ack: 0, payload: [UInt8](repeating: 7, count: 16_288 - 54))
        #expect(frame.count == 16_288)
        nic.legacy(frame, cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1 && nic.errors(.transmitPacketTooLarge) == 0)
        nic.legacy(frame + [0], cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1 && nic.errors(.transmitPacketTooLarge) == 1)
        #expect(nic.txStatus(1) & 1 == 1)                               // still completed
    }

    @Test func packetThatLapsTheRingWithoutEOP() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 8)
        for _ in 0 ..< 5 {
            for _ in 0 ..< 7 { nic.putTx(low: 0x10_0000, high: UInt64(Self.rs) << 24) }   // 0 bytes, no EOP
            nic.kickTx()
        }
        #expect(nic.errors(.transmitPacketEmpty) == 0)
        #expect(nic.model.transmit.pendingWriteBacks.count < 8)
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.errors(.transmitPacketTooLarge) == 1)
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1)
    }

    @Test func transmitBufferOutsideRAM() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.putTx(low: 0xFFFF_FFFF_FFFF_FFF0, high: 100 | UInt64(Self.eop | Self.rs) << 24)
        nic.putTx(low: 0xE000_0000, high: 100 | UInt64(Self.eop | Self.rs) << 24)
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.transmitBufferNotRAM) == 2)
        #expect(nic.txStatus(0) & 1 == 1 && nic.txStatus(1) & 1 == 1)
        // The next good packet goes out.
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 1)
    }

    @Test func receiveBufferOutsideRAMReportsRXE() throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.store(0xF000_0000, at: nic.rxRing.raw)                      // descriptor 0's buffer
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        let d = nic.rxDescriptor(0)
        #expect(d.done && d.eop && d.errors & 0x80 != 0 && d.length == 0)
        #expect(nic.errors(.receiveBufferNotRAM) == 1)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [2]))
        #expect(nic.rxDescriptor(1).done && nic.rxDescriptor(1).errors == 0)
    }

    @Test func segmentationContextsThatDoNotFit() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 32)
        let frame = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(3000))
        let cases: [(hdrlen: Int, mss: Int, tucss: Int)] = [
            (200, 1000, 34),          // header longer than the 54 bytes in front of the payload… and the frame's IP header
            (3100, 1000, 34),         // HDRLEN (8 bits) is 3100 & 0xFF: nonsense either way
            (54, 0, 34),              // MSS 0
            (54, 1000, 250),          // TUCSS beyond the header
            (54, 1000, 20),           // TUCSS inside the IP header
        ]
        for c in cases {
            nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: c.tucss, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x07,
                        hdrlen: c.hdrlen & 0xFF, mss: c.mss)
            nic.data(frame, dcmd: Self.tse | Self.eop | Self.rs, popts: 3)
        }
        nic.kickTx()
        #expect(nic.r(R.tsctfc) >= 4)
        #expect(nic.errors(.offloadContextInvalid) >= 4)
        // A tiny frame claiming a big header.
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 50, tucse: 0, paylen: 0, tucmd: 0x07, hdrlen: 54, mss: 100)
        nic.data(Array(frame[0 ..< 30]), dcmd: Self.tse | Self.eop | Self.rs, popts: 3)
        nic.kickTx()
        #expect(nic.endpoint.sent.allSatisfy { $0.bytes.count <= 1514 })
    }

    @Test func segmentationWithoutContextAndReservedDescriptorTypes() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.data(FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(100)), dcmd: Self.tse | Self.eop | Self.rs)
        nic.putTx(low: 0, high: 7 << 20 | UInt64(0x20 | Self.rs) << 24)   // DTYP 7
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.offloadContextInvalid) == 2)
        #expect(nic.r(R.tdh) == 2)
    }

    @Test func checksumFieldsOutsideThePacket() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.legacy(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), cmd: Self.eop | Self.rs | 0x04, cso: 250, css: 34)
        nic.context(ipcss: 200, ipcso: 255, ipcse: 9000, tucss: 34, tucso: 254, tucse: 0, paylen: 0, tucmd: 3, hdrlen: 0, mss: 0)
        nic.data(FrameBuilder.e1000.tcp(ack: 0, payload: [1]), dcmd: Self.eop | Self.rs, popts: 3)
        nic.kickTx()
        #expect(nic.endpoint.sent.count == 2)                            // sent as they are
        #expect(nic.errors(.offloadContextInvalid) == 2)
    }

    @Test func ringReprogrammedWhileRunning() throws {
        let nic = try NIC()
        nic.setUpReceive()
        let other = nic.machine.allocator.alloc(size: 128, align: 128)
        nic.w(R.rdbal, UInt32(other.raw))
        #expect(nic.errors(.ringReprogrammedWhileEnabled) == 1)
        nic.w(R.rdlen, 256)
        #expect(nic.errors(.ringReprogrammedWhileEnabled) == 2)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))                        // zeroed descriptors: buffer 0 is RAM
        nic.setUpTransmit()
        nic.w(R.tdh, 0)
        #expect(nic.errors(.headWrittenWhileEnabled) == 1)
    }

    @Test func reservedBufferSizeAndFramesLargerThanTheRing() throws {
        let nic = try NIC()
        nic.setUpReceive(rctl: Bit.rctlEN | Bit.rctlBSEX)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        #expect(nic.errors(.receiveRingInvalid) == 1)
        nic.w(R.ctrl, Bit.ctrlRST)
        nic.setUpReceive(count: 8, bufferSize: 256, rctl: Bit.rctlEN | Bit.rctlLPE | 3 << 16)
        nic.w(R.ims, Bit.rxo)
        #expect(nic.endpoint.inject(FrameBuilder.e1000.ethernet(type: 0x88B5, payload: Payload.counting(9000))))
        #expect(nic.r(R.mpc) == 1 && nic.irq)
        #expect(nic.errors(.receiveFrameLargerThanRing) == 1)
    }

    @Test func runtAndOversizedFramesFromTheBackend() throws {
        let nic = try NIC()
        nic.setUpReceive(rctl: Bit.rctlEN | Bit.rctlLPE)
        #expect(nic.endpoint.inject([]))
        #expect(nic.endpoint.inject([1, 2, 3]))
        #expect(nic.endpoint.inject([UInt8](repeating: 0x52, count: 65_535)))
        #expect(!nic.rxDescriptor(0).done)
        #expect(nic.r(0x40A4) == 2 && nic.r(R.roc) == 1)                // RUC, ROC
    }

    /// Random register writes everywhere, then traffic: nothing traps, nothing hangs.
    @Test func randomRegisterWritesThenTraffic() throws {
        var rng = TestRandom(seed: 0xE1000)
        for round in 0 ..< 4 {
            let nic = try NIC()
            nic.setUpReceive(count: 16)
            nic.setUpTransmit(count: 16)
            for _ in 0 ..< 3000 {
                let offset = rng.next() % (128 << 10) & ~3
                var value = UInt32(truncatingIfNeeded: rng.next())
                if offset == 0 { value &= ~Bit.ctrlRST }
                let size = [1, 2, 4, 8][Int(rng.next() % 4)]
                nic.dev.write(bar: 0, offset: offset, size: size, value: UInt64(value))
                if rng.next() % 8 == 0 { _ = nic.dev.read(bar: 0, offset: rng.next() % (128 << 10), size: 4) }
                if rng.next() % 64 == 0 { nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(Int(rng.next() % 1400)))) }
                if rng.next() % 64 == 0 {
                    // Garbage descriptors in RAM.
                    nic.store(rng.next(), at: nic.txRing.raw + (rng.next() % 16) * 16)
                    nic.store(rng.next(), at: nic.txRing.raw + (rng.next() % 16) * 16 + 8)
                }
                if rng.next() % 256 == 0 { nic.machine.advance(microseconds: rng.next() % 5000) }
            }
            nic.dev.write32(bar: 1, offset: 0, UInt32(round))
            _ = nic.dev.read32(bar: 1, offset: 4)
        }
    }
}
