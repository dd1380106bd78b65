import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// Checksum and segmentation offloads both ways, with and without a backend that takes
/// virtio-net headers. Expected frames are built independently (FrameBuilder).
@Suite("virtio-net offloads")
struct OffloadTests {
    static let plain = BackendCapabilities()
    static let vnet = BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN])

    /// A TCP/IPv4 frame as Linux hands it with CHECKSUM_PARTIAL: pseudo-header sum in the field.
    static func partialTCP4(_ payload: [UInt8], seq: UInt32 = 1000, flags: TCPFlags = [.ack, .psh]) -> ([UInt8], [UInt8]) {
        let full = FrameBuilder.virtioNet.tcp(seq: seq, flags: flags, payload: payload, id: 7)
        return (FrameBuilder.withPartialChecksum(full), full)
    }

    static let csumHeader = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16)

    @Test func transmitChecksumCompletedInSoftware() throws {
        let d = try VirtioNetDriver(capabilities: Self.plain)
        d.bringUp()
        let (partial, full) = Self.partialTCP4(Payload.counting(333))
        #expect(partial != full)
        d.send(partial, header: Self.csumHeader)
        let sent = d.endpoint.takeSent()
        #expect(sent.count == 1)
        #expect(sent.first?.bytes == full, "checksum completed byte for byte")
        #expect(sent.first?.header == nil)
        #expect(sent.first.map { FrameBuilder.checksumsValid($0.bytes) } == true)
        // UDP too (RFC 768: a computed 0 goes out as 0xFFFF; here just validity).
        let udp = FrameBuilder.virtioNet.udp(payload: Payload.counting(77), id: 9)
        let udpPartial = FrameBuilder.withPartialChecksum(udp)
        d.send(udpPartial, header: VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 6))
        #expect(d.endpoint.takeSent().first?.bytes == udp)
    }

    @Test func transmitHeaderPassesThroughToVnetBackend() throws {
        let d = try VirtioNetDriver(capabilities: Self.vnet)
        d.bringUp()
        let (partial, _) = Self.partialTCP4(Payload.counting(333))
        d.send(partial, header: Self.csumHeader)
        let payload = Payload.counting(20000, seed: 2)
        let (big, _) = Self.partialTCP4(payload)
        let gso = VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        d.send(big, header: gso)
        let sent = d.endpoint.takeSent()
        #expect(sent.count == 2)
        #expect(sent.first?.bytes == partial, "untouched")
        #expect(sent.first?.header == Self.csumHeader)
        #expect(sent.last?.bytes == big, "one frame, not segmented")
        #expect(sent.last?.header == gso)
    }

    /// What tcp_gso_segment makes of a TSO frame: the expected segments, built here.
    static func expectedSegments(payload: [UInt8], mss: Int, v6: Bool, flags: TCPFlags = [.fin, .psh, .ack]) -> [[UInt8]] {
        stride(from: 0, to: payload.count, by: mss).enumerated().map { i, start in
            let chunk = Array(payload[start ..< min(start + mss, payload.count)])
            let last = start + mss >= payload.count
            let f = last ? flags : flags.subtracting([.fin, .psh]) // FIN and PSH only on the last
            return v6 ? FrameBuilder.virtioNet.tcp(ipv6: true, seq: 1000 &+ UInt32(start), flags: f, payload: chunk)
                      : FrameBuilder.virtioNet.tcp(seq: 1000 &+ UInt32(start), flags: f, payload: chunk, id: 7 &+ UInt16(i))
        }
    }

    @Test(arguments: [false, true])
    func transmitTSOSegmentedInSoftware(v6: Bool) throws {
        let d = try VirtioNetDriver(capabilities: Self.plain)
        d.bringUp()
        let payload = Payload.counting(5000, seed: 4)
        let full = FrameBuilder.virtioNet.tcp(ipv6: v6, flags: [.fin, .psh, .ack], payload: payload, id: 7)
        let l4 = v6 ? 54 : 34
        let partial = FrameBuilder.withPartialChecksum(full)
        let header = VirtioNetHeader(flags: 1, gsoType: v6 ? 4 : 1, headerLength: UInt16(l4 + 20), gsoSize: 1400,
                                     checksumStart: UInt16(l4), checksumOffset: 16)
        d.send(partial, header: header)
        let sent = d.endpoint.takeSent()
        let expected = Self.expectedSegments(payload: payload, mss: 1400, v6: v6)
        #expect(sent.count == expected.count)
        #expect(sent.map(\.bytes) == expected, "segments byte for byte")
        #expect(sent.allSatisfy { FrameBuilder.checksumsValid($0.bytes) && $0.header == nil })
        #expect(d.queues[1]?.takeUsed().count == 1)
    }

    @Test func neverLargerThanTheBackendTakes() throws {
        // A vnet backend that does TSO but takes at most 1514-byte frames: segment here.
        let d = try VirtioNetDriver(capabilities: BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6], maxFrameSize: 1514))
        d.bringUp()
        let payload = Payload.counting(4000)
        let (partial, _) = Self.partialTCP4(payload, flags: [.ack, .psh])
        d.send(partial, header: VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 54, gsoSize: 3000, checksumStart: 34, checksumOffset: 16))
        let sent = d.endpoint.takeSent()
        #expect(sent.count == 3)
        #expect(sent.allSatisfy { $0.bytes.count <= 1514 && FrameBuilder.checksumsValid($0.bytes) })
        #expect(sent.flatMap { Array($0.bytes[54...]) } == payload)
        // A plain oversized frame is dropped and counted, and the chain still returned.
        d.send(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(3000)))
        #expect(d.endpoint.takeSent().isEmpty)
        #expect(d.device?.counters.drops(.oversized) == 1)
        #expect(d.queues[1]?.takeUsed().count == 2)
    }

    @Test func badOffloadHeadersAreDroppedNotTrusted() throws {
        let d = try VirtioNetDriver(capabilities: Self.plain)
        d.bringUp()
        let (partial, _) = Self.partialTCP4(Payload.counting(100))
        for h in [VirtioNetHeader(flags: 1, checksumStart: 2000, checksumOffset: 16),        // start past the end
                  VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 0xFFFF),      // field past the end
                  VirtioNetHeader(flags: 1, gsoType: 1, gsoSize: 0, checksumStart: 34, checksumOffset: 16), // mss 0
                  VirtioNetHeader(flags: 1, gsoType: 4, gsoSize: 500, checksumStart: 34, checksumOffset: 16), // v6 GSO on v4
                  VirtioNetHeader(flags: 1, gsoType: 0x33, gsoSize: 500)] {                  // unknown type
            d.send(partial, header: h)
        }
        d.send(Array(partial[0 ..< 20]), header: VirtioNetHeader(flags: 1, gsoType: 1, gsoSize: 10)) // truncated headers
        #expect(d.endpoint.sent.isEmpty)
        #expect(d.device?.counters.drops(.malformed) == 6)
        #expect(d.queues[1]?.takeUsed().count == 6)
        #expect(d.status & 64 == 0)
    }

    @Test func guestReceiveOffloadsFollowNegotiation() throws {
        let d = try VirtioNetDriver(capabilities: Self.vnet)
        d.bringUp()
        #expect(d.endpoint.receiveOffloads == [.checksum, .tso4, .tso6, .tsoECN])
        let e = try VirtioNetDriver(capabilities: Self.vnet)
        e.bringUp { $0 & ~(NetF.guestTSO4 | NetF.guestTSO6 | NetF.guestECN) }
        #expect(e.endpoint.receiveOffloads == [.checksum])
        e.setStatus(0)
        #expect(e.endpoint.receiveOffloads == [])
    }

    @Test func receiveHeaderPassesThroughWhenAccepted() throws {
        let d = try VirtioNetDriver(capabilities: Self.vnet)
        d.bringUp()
        let bufs = d.postReceiveBuffers(20, size: 4096)
        let (partial, _) = Self.partialTCP4(Payload.counting(9000))
        let h = VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        #expect(d.endpoint.inject(partial, header: h))
        var expected = h
        expected.numBuffers = 3
        #expect(parseHeader(d.bytes(at: bufs[0], 12)) == expected)
    }

    /// A backend's header reaches the guest with only the flags it knows, and an ECN bit
    /// without a GSO type (which Linux's virtio_net_hdr_to_skb refuses) is dropped and
    /// counted: both passed as they came.
    @Test func receiveHeadersCarryOnlyWhatTheGuestKnows() throws {
        let d = try VirtioNetDriver(capabilities: Self.vnet)
        d.bringUp()
        let bufs = d.postReceiveBuffers(4, size: 2048)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(100))
        #expect(d.endpoint.inject(frame, header: VirtioNetHeader(flags: 0xF2)))          // DATA_VALID and junk
        #expect(parseHeader(d.bytes(at: bufs[0], 12)) == VirtioNetHeader(flags: VirtioNetHeader.dataValid, numBuffers: 1))
        #expect(d.endpoint.inject(frame, header: VirtioNetHeader(gsoType: VirtioNetHeader.gsoECN)))
        #expect(d.device?.counters.drops(.malformed) == 1)
        #expect(d.queues[0]?.takeUsed().count == 1)
    }

    @Test func receiveChecksumCompletedWhenGuestDidNotAcceptPartial() throws {
        let d = try VirtioNetDriver(capabilities: Self.vnet)
        d.bringUp { $0 & ~(NetF.guestCsum | NetF.guestTSO4 | NetF.guestTSO6 | NetF.guestECN | NetF.guestUFO) }
        let bufs = d.postReceiveBuffers(2, size: 2048)
        let (partial, full) = Self.partialTCP4(Payload.counting(500))
        #expect(d.endpoint.inject(partial, header: Self.csumHeader))
        #expect(parseHeader(d.bytes(at: bufs[0], 12)) == VirtioNetHeader(numBuffers: 1))
        #expect(d.bytes(at: try #require(bufs[0].checkedAdd(12)), full.count) == full)
        // A GSO frame the guest did not accept is refused and counted.
        #expect(d.endpoint.inject(partial, header: VirtioNetHeader(flags: 1, gsoType: 1, gsoSize: 100, checksumStart: 34, checksumOffset: 16)))
        #expect(d.device?.counters.drops(.malformed) == 1)
        #expect(d.queues[0]?.takeUsed().count == 1)
    }
}
