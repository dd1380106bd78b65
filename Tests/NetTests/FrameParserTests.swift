import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct FrameParserTests {
    @Test func ipv4TCP() throws {
        let f = FrameBuilder.net.tcp(payload: Payload.random(10), tcpOptions: [1, 1, 1, 1])
        let p = try #require(FrameParser.parse(f))
        #expect(p.vlanTCI == nil)
        #expect(p.etherType == EtherType.ipv4)
        #expect(p.network == .ipv4)
        #expect(p.networkOffset == 14 && p.networkHeaderLength == 20)
        #expect(p.transportOffset == 34 && p.transportHeaderLength == 24)
        #expect(p.headerLength == 58)
        #expect(p.networkEnd == f.count)
        #expect(p.isTCP && !p.isFragment)
    }

    @Test func ipv4OptionsVLANAndPadding() throws {
        var f = FrameBuilder.net.udp(vlan: 0x2005, payload: [1, 2])
        f += [0, 0, 0, 0, 0, 0] // Ethernet padding after the IP packet
        let p = try #require(FrameParser.parse(f))
        #expect(p.vlanTCI == 0x2005 && p.networkOffset == 18)
        #expect(p.isUDP && p.transportHeaderLength == 8)
        #expect(p.networkEnd == f.count - 6)
        let withOptions = FrameBuilder.net.tcp(payload: [9], ipOptions: [1, 1, 1, 0])
        #expect(FrameParser.parse(withOptions)?.transportOffset == 38)
    }

    @Test func ipv6WithExtensionHeaders() throws {
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
        let tcp = FrameBuilder.net.tcpHeader(seq: 1, flags: [.ack]) + [1, 2, 3]
        let hbh: [UInt8] = [60, 0, 1, 4, 0, 0, 0, 0]
        let dopt: [UInt8] = [6, 1] + [UInt8](repeating: 1, count: 14)
        let body = hbh + dopt + tcp
        let f = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: body.count, next: 0) + body
        let p = try #require(FrameParser.parse(f))
        #expect(p.network == .ipv6)
        #expect(p.transportProtocol == 6)
        #expect(p.networkHeaderLength == 40 + 24)
        #expect(p.transportOffset == 14 + 64)
        #expect(p.isTCP)
    }

    @Test func ipv6Fragments() throws {
        let first: [UInt8] = [6, 0, 0x00, 0x01, 0, 0, 0, 1] + FrameBuilder.net.tcpHeader(seq: 1, flags: [])
        let f1 = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: first.count, next: 44) + first
        let p1 = try #require(FrameParser.parse(f1))
        #expect(p1.isFragment && p1.isTCP)
        let later: [UInt8] = [6, 0, 0x00, 0x10, 0, 0, 0, 1, 9, 9, 9, 9]
        let f2 = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: later.count, next: 44) + later
        let p2 = try #require(FrameParser.parse(f2))
        #expect(p2.isFragment && p2.transportOffset == nil && p2.transportProtocol == 6)
    }

    @Test func ipv4Fragment() throws {
        var f = FrameBuilder.net.udp(payload: [UInt8](repeating: 1, count: 20))
        f.put16(0x0002, at: 14 + 6) // offset 16 bytes, a later fragment
        let p = try #require(FrameParser.parse(f))
        #expect(p.isFragment && p.transportOffset == nil)
        f.put16(0x2000, at: 14 + 6) // MF, first fragment
        let q = try #require(FrameParser.parse(f))
        #expect(q.isFragment && q.transportOffset == 34)
    }

    @Test func nonIPAndESP() throws {
        let arp = FrameBuilder.net.ethernet(type: 0x0806) + [UInt8](repeating: 0, count: 28)
        let p = try #require(FrameParser.parse(arp))
        #expect(p.network == nil && p.etherType == 0x0806)
        let esp = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: 8, next: 50) + [UInt8](repeating: 0, count: 8)
        let q = try #require(FrameParser.parse(esp))
        #expect(q.transportOffset == nil)
    }

    @Test func malformedAnswersNil() {
        let good = FrameBuilder.net.tcp(payload: Payload.random(30))
        #expect(FrameParser.parse(Array(good[..<13])) == nil)
        #expect(FrameParser.parse(Array(good[..<33])) == nil) // IPv4 header cut
        #expect(FrameParser.parse(Array(good[..<50])) == nil) // total length beyond the buffer
        var ihl = good; ihl[14] = 0x44                         // IHL 4 < 5
        #expect(FrameParser.parse(ihl) == nil)
        var bigIHL = good; bigIHL[14] = 0x4F; bigIHL.put16(60, at: 16)
        #expect(FrameParser.parse(Array(bigIHL[..<60])) == nil)
        var shortTotal = good; shortTotal.put16(10, at: 16)   // total < IHL*4
        #expect(FrameParser.parse(shortTotal) == nil)
        var version = good; version[14] = 0x55
        #expect(FrameParser.parse(version) == nil)
        var doff = good; doff[34 + 12] = 0x40                  // data offset 4 < 5
        #expect(FrameParser.parse(doff) == nil)
        var bigDoff = good; bigDoff[34 + 12] = 0xF0; bigDoff.put16(20 + 40, at: 16)
        #expect(FrameParser.parse(Array(bigDoff[..<74])) == nil) // doff 60 > what the packet holds
        let vlanCut = FrameBuilder.net.ethernet(type: 0x8100) + [0x00]
        #expect(FrameParser.parse(vlanCut) == nil)
        var v6 = FrameBuilder.net.tcp(ipv6: true, payload: [1])
        v6.put16(500, at: 18)                                   // payload length beyond buffer
        #expect(FrameParser.parse(v6) == nil)
        let hbhLoop = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: 8, next: 0) + [0, 200, 0, 0, 0, 0, 0, 0]
        #expect(FrameParser.parse(hbhLoop) == nil)             // extension header longer than the packet
    }

    @Test func headersOnlyIgnoresIPLengths() throws {
        var f = FrameBuilder.net.tcp(payload: Payload.random(1000))
        f.put16(0, at: 16) // Linux e1000 TSO leaves total length 0
        #expect(FrameParser.parse(f) == nil)
        let p = try #require(FrameParser.parse(Array(f[..<54]), lengths: .headersOnly))
        #expect(p.headerLength == 54)
    }

    @Test func randomBytesNeverTrap() {
        var r = TestRandom(seed: 1234)
        let seeds = [FrameBuilder.net.tcp(payload: Payload.random(40)), FrameBuilder.net.tcp(ipv6: true, vlan: 5, payload: [1, 2, 3]),
                     FrameBuilder.net.udp(payload: [1, 2, 3, 4])]
        for i in 0 ..< 20_000 {
            var f = seeds[i % seeds.count]
            for _ in 0 ..< 1 + r.below(4) { f[r.below(f.count)] = UInt8(truncatingIfNeeded: r.next()) }
            let cut = Array(f[..<r.below(f.count + 1)])
            for lengths in [FrameParser.Lengths.checked, .headersOnly] {
                if let p = FrameParser.parse(cut, lengths: lengths) {
                    // Whatever it answers lies inside the buffer.
                    #expect(p.networkEnd <= cut.count)
                    if let h = p.headerLength { #expect(h <= cut.count) }
                }
            }
            _ = ChecksumOffload.verify(cut)
        }
    }
}
