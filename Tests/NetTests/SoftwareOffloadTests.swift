import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct SoftwareOffloadTests {
    let tcp4 = VirtioNetHeader.GSOType.tcpv4.rawValue, tcp6 = VirtioNetHeader.GSOType.tcpv6.rawValue

    func run(_ frame: [UInt8], _ header: VirtioNetHeader, maxFrameSize: Int = 1514, cuts: [Int] = [], scratch: FrameScratchBuffer = FrameScratchBuffer()) throws -> [[UInt8]] {
        try withScattered(frame, cuts: cuts) { pieces in
            try collectSegments { emit in
                try SoftwareOffload.complete(pieces, header: header, maxFrameSize: maxFrameSize, buffer: scratch.bytes, emit: emit)
            }
        }
    }

    @Test func isNeeded() {
        let csum = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16)
        let gso = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: tcp4, gsoSize: 1448)
        let ecn = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: tcp4 | VirtioNetHeader.gsoECN, gsoSize: 1448)
        let plain = BackendCapabilities()
        let tap = BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6])
        let lying = BackendCapabilities(virtioNetHeader: false, offloads: [.checksum, .tso4])
        #expect(!SoftwareOffload.isNeeded(for: VirtioNetHeader(), backend: plain))
        #expect(SoftwareOffload.isNeeded(for: csum, backend: plain))
        #expect(!SoftwareOffload.isNeeded(for: csum, backend: tap))
        #expect(SoftwareOffload.isNeeded(for: csum, backend: lying))
        #expect(SoftwareOffload.isNeeded(for: gso, backend: plain))
        #expect(!SoftwareOffload.isNeeded(for: gso, backend: tap))
        #expect(SoftwareOffload.isNeeded(for: ecn, backend: tap))
        #expect(SoftwareOffload.isNeeded(for: VirtioNetHeader(gsoType: 9), backend: tap))
    }

    @Test func needsChecksumOnly() throws {
        var frame = FrameBuilder.net.udp(payload: Payload.random(200))
        frame.put16(FrameBuilder.pseudoHeaderSum(frame, ip: 14, proto: 17, length: frame.count - 34), at: 40)
        let out = try run(frame, VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 6), cuts: [3, 41])
        #expect(out.count == 1 && FrameBuilder.transportChecksumValid(out[0], ip: 14, l4: 34, proto: 17))
        // Bytes other than the checksum are the frame's.
        var expected = out[0]; expected.put16(frame.be16(40), at: 40)
        #expect(expected == frame)
        // Nothing asked: the frame as is.
        #expect(try run(frame, VirtioNetHeader()) == [frame])
    }

    @Test(arguments: [false, true])
    func gsoLikeLinuxVirtioNet(ipv6: Bool) throws {
        // Linux leaves the full-length pseudo-header sum in the field and sets hdr_len to
        // its linear length, which the device must not trust.
        let l4 = ipv6 ? 54 : 34
        var frame = FrameBuilder.net.tcp(ipv6: ipv6, vlan: nil, payload: Payload.random(60_000), tcpOptions: TSOSegmenterTests.timestamps)
        frame.put16(FrameBuilder.pseudoHeaderSum(frame, ip: 14, proto: 6, length: frame.count - l4), at: l4 + 16)
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: ipv6 ? tcp6 : tcp4, headerLength: 999,
                                     gsoSize: 1448, checksumStart: UInt16(l4), checksumOffset: 16)
        let out = try run(frame, header, maxFrameSize: 1514, cuts: [50, 9000])
        let hdr = l4 + 32
        let mss = min(1448, 1514 - hdr) // cut to what the backend takes
        #expect(out.count == (60_000 + mss - 1) / mss)
        for s in out {
            #expect(s.count <= 1514)
            #expect(FrameBuilder.transportChecksumValid(s, ip: 14, l4: l4, proto: 6))
            if !ipv6 { #expect(FrameBuilder.ipv4HeaderValid(s, ip: 14)) }
            #expect(ChecksumOffload.verify(s).transport == .good)
        }
    }

    @Test func gsoSizeLargerThanBackendFrameIsCut() throws {
        let frame = FrameBuilder.net.tcp(payload: Payload.random(9000))
        let out = try run(frame, VirtioNetHeader(gsoType: tcp4, gsoSize: 8000), maxFrameSize: 1514)
        #expect(out.allSatisfy { $0.count <= 1514 })
        #expect(out.reduce(0) { $0 + $1.count - 54 } == 9000)
    }

    @Test func vlanTaggedGSO() throws {
        let frame = FrameBuilder.net.tcp(vlan: 0x0123, payload: Payload.random(4000))
        let out = try run(frame, VirtioNetHeader(gsoType: tcp4, gsoSize: 1400), maxFrameSize: 1518)
        #expect(out.count == 3)
        for s in out {
            #expect(s.be16(12) == 0x8100 && s.be16(14) == 0x0123)
            #expect(FrameBuilder.transportChecksumValid(s, ip: 18, l4: 38, proto: 6) && FrameBuilder.ipv4HeaderValid(s, ip: 18))
        }
    }

    @Test func rejectsMismatchesAndAbsurdValues() {
        let frame4 = FrameBuilder.net.tcp(payload: Payload.random(3000))
        let udp = FrameBuilder.net.udp(payload: Payload.random(3000))
        let cases: [([UInt8], VirtioNetHeader, Int)] = [
            (frame4, VirtioNetHeader(gsoType: tcp6, gsoSize: 1000), 1514),             // type says IPv6
            (udp, VirtioNetHeader(gsoType: tcp4, gsoSize: 1000), 1514),                // not TCP
            (frame4, VirtioNetHeader(gsoType: VirtioNetHeader.GSOType.udp.rawValue, gsoSize: 1000), 1514), // UFO of a TCP frame
            (frame4, VirtioNetHeader(gsoType: 77, gsoSize: 1000), 1514),
            (frame4, VirtioNetHeader(gsoType: tcp4, gsoSize: 0), 1514),                // mss 0
            (frame4, VirtioNetHeader(gsoType: tcp4, gsoSize: 1000), 54),               // no room for payload
            (frame4, VirtioNetHeader(gsoType: tcp4, gsoSize: 1000), 0),
            (frame4, VirtioNetHeader(gsoType: tcp4, gsoSize: 1000), -1),
            (Array(frame4[..<10]), VirtioNetHeader(), 1514),                           // no Ethernet header
            (Array(frame4[..<40]), VirtioNetHeader(gsoType: tcp4, gsoSize: 100), 1514), // headers cut
            (frame4, VirtioNetHeader(), 1000),                                         // oversized, no GSO
            (frame4, VirtioNetHeader(flags: 1, checksumStart: 3060, checksumOffset: 0), 65_535),
            (frame4, VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 0xFFFF), 65_535),
        ]
        for (i, (frame, header, limit)) in cases.enumerated() {
            #expect(throws: FrameError.self, "case \(i)") { _ = try run(frame, header, maxFrameSize: limit) }
        }
    }

    @Test func randomHeadersNeverTrap() {
        var r = TestRandom(seed: 5)
        let frames = [FrameBuilder.net.tcp(payload: Payload.random(5000)), FrameBuilder.net.tcp(ipv6: true, payload: Payload.random(700)),
                      FrameBuilder.net.udp(payload: [1, 2, 3]), FrameBuilder.net.udp(payload: Payload.random(4000)),
                      FrameBuilder.net.udp(ipv6: true, vlan: 9, payload: Payload.random(2000))]
        let scratch = FrameScratchBuffer(capacity: 3000)
        for i in 0 ..< 3000 {
            var f = frames[i % frames.count]
            for _ in 0 ..< r.below(3) { f[r.below(min(f.count, 90))] = UInt8(truncatingIfNeeded: r.next()) }
            let h = VirtioNetHeader(flags: UInt8(r.below(4)), gsoType: [0, 1, 3, 4, 5, 0x81, 0x83, 200][r.below(8)],
                                    headerLength: UInt16(truncatingIfNeeded: r.next()), gsoSize: UInt16(truncatingIfNeeded: r.below(2) == 0 ? r.next() : UInt64(r.below(2000))),
                                    checksumStart: UInt16(r.below(120)), checksumOffset: UInt16(r.below(40)))
            _ = try? withScattered(f, cuts: [r.below(f.count), r.below(f.count)]) { pieces in
                try SoftwareOffload.complete(pieces + [UnsafeRawBufferPointer(start: nil, count: 0)], header: h,
                                             maxFrameSize: r.below(3000), buffer: scratch.bytes) { frame in
                    #expect(frame.count <= 3000)
                }
            }
        }
    }
}
