import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

/// A packet leaves from guest memory, and only the paths that read or rewrite its headers
/// copy them first (TransmitAssembly.swift): what goes out must be byte for byte what a
/// whole copy would send, whatever shape the buffers have.
@Suite struct TransmitAssemblyTests {
    static let eop: UInt8 = 0x01, ifcs: UInt8 = 0x02, rs: UInt8 = 0x08, vle: UInt8 = 0x40
    static let ixsm: UInt8 = 0x01, txsm: UInt8 = 0x02

    static func legacyHigh(_ length: Int, cmd: UInt8) -> UInt64 { UInt64(length) | UInt64(cmd) << 24 }

    /// One packet in legacy descriptors over `buffers` (EOP and RS on the last), sent.
    static func send(_ nic: NIC, _ buffers: [(GuestAddress, Int)]) throws -> InMemoryEndpoint.SentFrame {
        for (i, (address, length)) in buffers.enumerated() {
            nic.putTx(low: address.raw, high: legacyHigh(length, cmd: ifcs | (i == buffers.count - 1 ? eop | rs : 0)))
        }
        nic.kickTx()
        return try #require(nic.endpoint.sent.first)
    }

    @Test func aPacketThatGoesOutAsItIsLeavesFromGuestMemory() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(1472))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.bytes == frame)
        #expect(sent.segmentCount == 1)                       // the guest's buffer, nothing copied
        #expect(nic.txStatus(0) & 1 == 1)
        #expect(nic.r(R.gotcl) == UInt32(frame.count + 4))
    }

    @Test func aShortPacketGoesOutWhole() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(100))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.first?.segmentCount == 1)
        #expect(nic.endpoint.sent.first?.bytes == frame)
    }

    @Test func aBufferAcrossTwoRAMRegionsIsCopied() throws {
        let half: UInt64 = 16 << 20
        let memory = try GuestMemory(layout: [(base: 0, size: half), (base: half, size: half)])
        let nic = try NIC(memory: memory)
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(3000))
        let buffer = GuestAddress(half - 1000)             // 1000 bytes in the first region, the rest in the second
        try memory.writeBytes(frame, at: buffer)
        let sent = try Self.send(nic, [(buffer, frame.count)])
        #expect(sent.bytes == frame)
        #expect(sent.segmentCount == 1)
    }

    /// Buffers with gaps between them: each is a piece of its own until the list is full.
    @Test func aPacketOfManyBuffersKeepsTheScatterListShort() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 256)
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(16_000, seed: 3))   // under 16,288 (§3.3.3)
        let starts = Array(stride(from: 0, to: frame.count, by: 100))
        #expect(starts.count > Transmit.maxPieces + 2)
        let area = nic.machine.allocator.alloc(size: UInt64(starts.count * 128))
        var buffers: [(GuestAddress, Int)] = []
        for (i, start) in starts.enumerated() {
            let piece = Array(frame[start ..< min(start + 100, frame.count)])
            let address = GuestAddress(area.raw + UInt64(i * 128))
            try nic.machine.memory.writeBytes(piece, at: address)
            buffers.append((address, piece.count))
        }
        let sent = try Self.send(nic, buffers)
        #expect(sent.bytes == frame)
        #expect(sent.segmentCount > 2 && sent.segmentCount <= 1 + Transmit.maxPieces)
    }

    /// Linux's e1000_tx_map splits one linear buffer at 4 KiB: descriptors whose buffers
    /// follow each other in guest memory go out as one piece.
    @Test func buffersThatFollowEachOtherAreOnePiece() throws {
        let nic = try NIC()
        nic.setUpTransmit(count: 32)
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(9000, seed: 5))
        let buffer = nic.machine.allocator.alloc(size: UInt64(frame.count))
        try nic.machine.memory.writeBytes(frame, at: buffer)
        let buffers = stride(from: 0, to: frame.count, by: 4096).map { (GuestAddress(buffer.raw + UInt64($0)), min(4096, frame.count - $0)) }
        let sent = try Self.send(nic, buffers)
        #expect(sent.bytes == frame)
        #expect(sent.segmentCount == 1)
    }

    /// BPTC and MPTC read the destination address, which a guest may split across buffers.
    @Test func aDestinationSplitAcrossBuffersIsStillCounted() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.addressed(to: FrameBuilder.broadcast).udp(payload: Payload.counting(200))
        let area = nic.machine.allocator.alloc(size: 4096)
        try nic.machine.memory.writeBytes(Array(frame[0 ..< 3]), at: area)
        try nic.machine.memory.writeBytes(Array(frame[3...]), at: GuestAddress(area.raw + 1024))
        let sent = try Self.send(nic, [(area, 3), (GuestAddress(area.raw + 1024), frame.count - 3)])
        #expect(sent.bytes == frame)
        #expect(sent.segmentCount == 2)
        #expect(nic.r(R.bptc) == 1)
    }

    @Test func aVLANTagGoesIntoTheHead() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.w(R.ctrl, nic.r(R.ctrl) | Bit.ctrlVME)
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(1400))
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.vle | Self.rs, special: 0x2123)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.bytes == Array(frame[0 ..< 12]) + [0x81, 0x00, 0x21, 0x23] + Array(frame[12...]))
        #expect(sent.segmentCount == 2)                       // the tagged head, then the rest from guest memory
    }

    @Test func aPayloadBufferOutsideRAMDropsThePacketOnce() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let frame = FrameBuilder.e1000.udp(payload: Payload.counting(1000))
        nic.legacy(Array(frame[0 ..< 600]), cmd: Self.ifcs)
        nic.putTx(low: 0xE000_0000, high: Self.legacyHigh(400, cmd: Self.ifcs))          // the MMIO hole
        nic.putTx(low: 0xFFFF_FFFF_FFFF_FF00, high: Self.legacyHigh(0x200, cmd: Self.eop | Self.ifcs | Self.rs)) // wraps
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.transmitBufferNotRAM) == 1)
        #expect(nic.txStatus(2) & 1 == 1)
        nic.legacy(frame, cmd: Self.eop | Self.ifcs | Self.rs)
        nic.kickTx()
        #expect(nic.endpoint.sent.map(\.bytes) == [frame])
    }

    /// A buffer that starts in the address space but would run past 2^64.
    @Test func aBufferWrappingPastTheHeadIsUnreadable() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        nic.putTx(low: 0xFFFF_FFFF_FFFF_FFC0, high: Self.legacyHigh(1000, cmd: Self.eop | Self.ifcs | Self.rs))
        nic.kickTx()
        #expect(nic.endpoint.sent.isEmpty)
        #expect(nic.errors(.transmitBufferNotRAM) == 1)
    }

    /// Software checksums need the whole packet: it is copied first, and the guest's
    /// buffer is left as it was.
    @Test func checksumInSoftwareCopiesThePacketAndLeavesGuestMemoryAlone() throws {
        let nic = try NIC()
        nic.setUpTransmit()
        let good = FrameBuilder.e1000.udp(payload: Payload.counting(1400), id: 1)
        let frame = FrameBuilder.withPartialChecksum(good)
        nic.context(ipcss: 14, ipcso: 24, ipcse: 33, tucss: 34, tucso: 40, tucse: 0, paylen: 0, tucmd: 0x02, hdrlen: 0, mss: 0)
        let buffer = nic.machine.allocator.alloc(size: UInt64(frame.count))
        try nic.machine.memory.writeBytes(frame, at: buffer)
        nic.putTx(low: buffer.raw, high: UInt64(frame.count) | 1 << 20 | UInt64(0x20 | Self.eop | Self.ifcs | Self.rs) << 24
                  | UInt64(Self.txsm) << 40)
        nic.kickTx()
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.bytes == good)
        #expect(sent.segmentCount == 1)
        #expect(try nic.machine.memory.readBytes(at: buffer, count: frame.count) == frame)
    }

    /// Through a backend that finishes offloads, a TSO send's payload is never copied.
    @Test func aTSOPayloadLeavesFromGuestMemory() throws {
        let nic = try OffloadPassThroughTests.offloadingNIC()
        nic.setUpTransmit(count: 64)
        var header = Array(FrameBuilder.e1000.tcp(ack: 0, flags: [.ack, .psh], payload: [])[0 ..< 54])
        header[16] = 0; header[17] = 0; header[24] = 0; header[25] = 0
        TransmitTests().sendTSO(nic, header: header, payload: Payload.counting(30_000), ipv4: true, mss: 1448)
        let sent = try #require(nic.endpoint.sent.first)
        #expect(sent.header?.isGSO == true)
        #expect(sent.segmentCount > 1)
        #expect(try OffloadPassThroughTests.expand(sent).count == 21)
    }
}
