import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct UDPOffloadTests {
    let ufo = VirtioNetHeader.GSOType.udp.rawValue

    func run(_ frame: [UInt8], _ header: VirtioNetHeader, maxFrameSize: Int = 1514, cuts: [Int] = []) throws -> [[UInt8]] {
        let scratch = FrameScratchBuffer()
        return try withScattered(frame, cuts: cuts) { pieces in
            try collectSegments { emit in
                try SoftwareOffload.complete(pieces, header: header, maxFrameSize: maxFrameSize, buffer: scratch.bytes, emit: emit)
            }
        }
    }

    /// Puts IPv4 fragments back together (independently of the implementation).
    func reassemble(_ fragments: [[UInt8]]) -> [UInt8] {
        var datagram = [UInt8]()
        for (i, f) in fragments.enumerated() {
            let field = f.be16(20)
            #expect(Int(field & 0x1FFF) * 8 == datagram.count, "fragment \(i) offset")
            #expect((field & 0x2000 != 0) == (i < fragments.count - 1), "fragment \(i) MF")
            #expect(field & 0x4000 == 0, "fragment \(i) DF")
            #expect(f.be16(18) == 0x1234, "fragment \(i) keeps the identification")
            #expect(Int(f.be16(16)) == f.count - 14)
            #expect(FrameBuilder.ipv4HeaderValid(f, ip: 14))
            if i < fragments.count - 1 { #expect((f.count - 34) % 8 == 0) }
            datagram += f[34...]
        }
        return datagram
    }

    @Test func ufoFragmentsWithCompletedChecksum() throws {
        let original = FrameBuilder.net.udp(payload: Payload.random(20_000))
        var sent = original
        sent.put16(FrameBuilder.pseudoHeaderSum(original, ip: 14, proto: 17, length: original.count - 34), at: 40) // NEEDS_CSUM form
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: ufo, gsoSize: 1480, checksumStart: 34, checksumOffset: 6)
        let fragments = try run(sent, header, cuts: [7, 41, 1001, 15_000])
        #expect(fragments.count == (20_008 + 1479) / 1480)
        #expect(fragments.allSatisfy { $0.count <= 1514 })
        #expect(reassemble(fragments) == Array(original[34...]))
    }

    @Test func ufoWithoutNeedsChecksumKeepsTheField() throws {
        var original = FrameBuilder.net.udp(payload: Payload.random(3000))
        original.put16(0, at: 40) // sent without a UDP checksum
        let fragments = try run(original, VirtioNetHeader(gsoType: ufo, gsoSize: 1000))
        #expect(fragments.map(\.count) == [34 + 1000, 34 + 1000, 34 + 1000, 34 + 8]) // 3008-byte datagram
        #expect(reassemble(fragments) == Array(original[34...]))
    }

    /// RFC 791 §3.1: only options with the "copied" flag go into every fragment; the rest
    /// become NOPs after the first (Linux's ip_options_fragment), the header's length kept.
    @Test func ufoCopiesOnlyCopiedOptionsPastTheFirstFragment() throws {
        let recordRoute: [UInt8] = [0x07, 7, 4, 0, 0, 0, 0]       // not copied
        let routerAlert: [UInt8] = [0x94, 4, 0, 0]                // copied
        let options = recordRoute + routerAlert + [0]
        var datagram = Array(FrameBuilder.net.udp(payload: Payload.random(2000))[34...])
        datagram.put16(0, at: 6)                                  // no UDP checksum
        let frame = FrameBuilder.net.ethernet(type: 0x0800)
            + FrameBuilder.net.ipv4Header(payloadLength: datagram.count, proto: 17, options: options) + datagram
        let fragments = try run(frame, VirtioNetHeader(gsoType: ufo, gsoSize: 1000))
        #expect(fragments.count == 3)
        #expect(Array(fragments[0][34 ..< 46]) == options)
        for f in fragments.dropFirst() {
            #expect(Array(f[34 ..< 46]) == [UInt8](repeating: 1, count: 7) + routerAlert + [0])
            #expect(FrameBuilder.ipv4HeaderValid(f, ip: 14))
        }
        #expect(fragments.map { Array($0[46...]) }.reduce([], +) == datagram)
    }

    @Test func ufoRefusals() {
        let v6 = FrameBuilder.net.udp(ipv6: true, payload: Payload.random(3000))
        #expect(throws: FrameError.self) { _ = try run(v6, VirtioNetHeader(gsoType: ufo, gsoSize: 1000)) }
        var fragment = FrameBuilder.net.udp(payload: Payload.random(3000))
        fragment.put16(0x2000, at: 20)
        #expect(throws: FrameError.self) { _ = try run(fragment, VirtioNetHeader(gsoType: ufo, gsoSize: 1000)) }
        let udp = FrameBuilder.net.udp(payload: Payload.random(3000))
        #expect(throws: FrameError.self) { _ = try run(udp, VirtioNetHeader(gsoType: ufo, gsoSize: 7)) }
        #expect(throws: FrameError.self) { _ = try run(udp, VirtioNetHeader(gsoType: ufo, gsoSize: 1000), maxFrameSize: 40) }
        #expect(throws: FrameError.self) {
            try UDPFragmenter.fragment(ScatteredFrame(udp.withUnsafeBytes { $0 }), networkOffset: Int.max, fragmentSize: 100,
                                       completeChecksum: true, into: FrameScratchBuffer().bytes) { _ in }
        }
    }

    @Test(arguments: [false, true])
    func usoSegmentsIntoDatagrams(ipv6: Bool) throws {
        let l4 = ipv6 ? 54 : 34
        let frame = FrameBuilder.net.udp(ipv6: ipv6, payload: Payload.random(4000))
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: SoftwareOffload.gsoUDPL4, gsoSize: 1400,
                                     checksumStart: UInt16(l4), checksumOffset: 6)
        let out = try run(frame, header, cuts: [60])
        #expect(out.map { $0.count - l4 - 8 } == [1400, 1400, 1200])
        for s in out {
            #expect(Int(s.be16(l4 + 4)) == s.count - l4)
            #expect(FrameBuilder.transportChecksumValid(s, ip: 14, l4: l4, proto: 17))
            #expect(ChecksumOffload.verify(s).transport == .good)
        }
        #expect(SoftwareOffload.isNeeded(for: header, backend: BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .ufo])))
    }
}
