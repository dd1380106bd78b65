import Testing
@testable import VMMNet
import VMMTestKit

/// Runs `body` with the frame cut into pieces at `cuts` (host buffers, as a NIC has them).
func withScattered<R>(_ frame: [UInt8], cuts: [Int], _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
    try frame.withUnsafeBytes { all in
        let points = [0] + cuts.filter { $0 > 0 && $0 < frame.count }.sorted() + [frame.count]
        let pieces = (0 ..< points.count - 1).map { UnsafeRawBufferPointer(rebasing: all[points[$0] ..< points[$0 + 1]]) }
        return try body(pieces)
    }
}

/// Collects the emitted segments as arrays.
func collectSegments(_ run: (_ emit: (UnsafeRawBufferPointer) -> Void) throws -> Int) rethrows -> [[UInt8]] {
    var out: [[UInt8]] = []
    let n = try run { out.append(Array($0)) }
    #expect(n == out.count)
    return out
}

@Suite struct TSOSegmenterTests {
    static let timestamps: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]

    /// Checks every segment against the original frame independently of the implementation.
    func verify(_ segments: [[UInt8]], original: [UInt8], ipv6: Bool, mss: Int, vlan: Bool = false) {
        let shift = vlan ? 4 : 0
        let ip = 14, l4 = ipv6 ? 54 : 34
        let hdr = l4 + Int(original[l4 + 12] >> 4) * 4
        let payload = Array(original[hdr...])
        let expectedCount = (payload.count + mss - 1) / mss
        #expect(segments.count == expectedCount)
        let seq0 = original.be32(l4 + 4), id0 = original.be16(ip + 4), flags0 = original[l4 + 13]
        for (i, tagged) in segments.enumerated() {
            var s = tagged
            if vlan {
                #expect(s.be16(12) == 0x8100 && s.be16(14) == 0x0064)
                s = Array(s[..<12] + s[16...])
            }
            let last = i == segments.count - 1
            let n = last ? payload.count - mss * i : mss
            #expect(s.count == hdr + n, "segment \(i) length")
            #expect(tagged.count == s.count + shift)
            #expect(Array(s[hdr...]) == Array(payload[mss * i ..< mss * i + n]), "segment \(i) payload")
            #expect(s.be32(l4 + 4) == seq0 &+ UInt32(mss * i), "segment \(i) seq")
            var flags = flags0
            if !last { flags &= ~TCPFlags([.fin, .psh]).rawValue }
            if i > 0 { flags &= ~TCPFlags.cwr.rawValue }
            #expect(s[l4 + 13] == flags, "segment \(i) flags")
            if ipv6 {
                #expect(Int(s.be16(ip + 4)) == s.count - ip - 40)
            } else {
                #expect(Int(s.be16(ip + 2)) == s.count - ip)
                #expect(s.be16(ip + 4) == id0 &+ UInt16(i))
                #expect(FrameBuilder.ipv4HeaderValid(s, ip: ip), "segment \(i) IP checksum")
            }
            #expect(FrameBuilder.transportChecksumValid(s, ip: ip, l4: l4, proto: 6), "segment \(i) TCP checksum")
            // Everything else in the headers is copied unchanged.
            #expect(Array(s[..<ip]) == Array(original[..<ip]))
            #expect(Array(s[l4 ..< l4 + 4]) == Array(original[l4 ..< l4 + 4]))
            #expect(Array(s[l4 + 20 ..< hdr]) == Array(original[l4 + 20 ..< hdr]))
        }
    }

    func layout(ipv6: Bool, mss: Int, hdrExtra: Int = 12) -> SegmentationLayout {
        SegmentationLayout(network: ipv6 ? .ipv6 : .ipv4, transport: .tcp, networkOffset: 14,
                           transportOffset: ipv6 ? 54 : 34, headerLength: (ipv6 ? 74 : 54) + hdrExtra, segmentSize: mss)
    }

    @Test(arguments: [false, true])
    func sixtyFourKiBSend(ipv6: Bool) throws {
        let flags: TCPFlags = [.ack, .psh, .fin, .cwr]
        let frame = FrameBuilder.net.tcp(ipv6: ipv6, seq: 0xFFFF_0000, flags: flags, payload: Payload.random(65_000),
                                   tcpOptions: Self.timestamps, id: 0xFFF0)
        let scratch = FrameScratchBuffer()
        // Whole, and cut at awkward places (inside the headers, odd lengths).
        for cuts in [[], [1, 13, 15, 33, 35, 61, 1000, 1001, 30_000], [66, 67, 7777]] {
            let segments = try withScattered(frame, cuts: cuts) { pieces in
                try collectSegments { emit in
                    try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: layout(ipv6: ipv6, mss: 1448), into: scratch.bytes, emit: emit)
                }
            }
            verify(segments, original: frame, ipv6: ipv6, mss: 1448)
        }
    }

    @Test(arguments: [false, true])
    func withVLANTagInserted(ipv6: Bool) throws {
        let frame = FrameBuilder.net.tcp(ipv6: ipv6, payload: Payload.random(5000), tcpOptions: Self.timestamps)
        let scratch = FrameScratchBuffer(capacity: 2000)
        let segments = try withScattered(frame, cuts: [20]) { pieces in
            try collectSegments { emit in
                try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: layout(ipv6: ipv6, mss: 1000), vlanTag: 0x64,
                                         into: scratch.bytes, emit: emit)
            }
        }
        verify(segments, original: frame, ipv6: ipv6, mss: 1000, vlan: true)
    }

    @Test func linuxE1000StyleHeaderIsRecomputed() throws {
        // Linux e1000_tso zeroes tot_len and the IP checksum and leaves a length-less
        // pseudo-header sum in the TCP checksum field.
        var frame = FrameBuilder.net.tcp(payload: Payload.random(3000))
        frame.put16(0, at: 16); frame.put16(0, at: 24)
        frame.put16(~FrameBuilder.pseudoHeaderSum(frame, ip: 14, proto: 6, length: 0), at: 34 + 16)
        let scratch = FrameScratchBuffer()
        let segments = try withScattered(frame, cuts: []) { pieces in
            try collectSegments { emit in
                try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: layout(ipv6: false, mss: 1460, hdrExtra: 0), into: scratch.bytes, emit: emit)
            }
        }
        #expect(segments.count == 3)
        for s in segments {
            #expect(FrameBuilder.ipv4HeaderValid(s, ip: 14) && FrameBuilder.transportChecksumValid(s, ip: 14, l4: 34, proto: 6))
            #expect(Int(s.be16(16)) == s.count - 14)
        }
    }

    @Test func udpSegmentation() throws {
        // The 8254x segments UDP too (TUCMD.TCP = 0): each datagram gets a header.
        let frame = FrameBuilder.net.udp(payload: Payload.random(2500))
        let scratch = FrameScratchBuffer()
        let l = SegmentationLayout(network: .ipv4, transport: .udp, networkOffset: 14, transportOffset: 34, headerLength: 42, segmentSize: 1000)
        let segments = try withScattered(frame, cuts: [5]) { pieces in
            try collectSegments { emit in try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: l, into: scratch.bytes, emit: emit) }
        }
        #expect(segments.map(\.count) == [1042, 1042, 542])
        for s in segments {
            #expect(Int(s.be16(38)) == s.count - 34)
            #expect(FrameBuilder.transportChecksumValid(s, ip: 14, l4: 34, proto: 17) && FrameBuilder.ipv4HeaderValid(s, ip: 14))
        }
    }

    @Test func headerOnlyFrameIsOneSegment() throws {
        let frame = FrameBuilder.net.tcp(flags: [.ack, .fin], payload: [])
        let scratch = FrameScratchBuffer(capacity: 200)
        let segments = try withScattered(frame, cuts: []) { pieces in
            try collectSegments { emit in
                try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: layout(ipv6: false, mss: 100, hdrExtra: 0), into: scratch.bytes, emit: emit)
            }
        }
        #expect(segments.count == 1 && segments[0].count == 54 && segments[0][47] == TCPFlags([.ack, .fin]).rawValue)
    }

    @Test func smallBufferCutsSegmentsSmaller() throws {
        let frame = FrameBuilder.net.tcp(payload: Payload.random(3000))
        let scratch = FrameScratchBuffer(capacity: 54 + 500)
        let segments = try withScattered(frame, cuts: []) { pieces in
            try collectSegments { emit in
                try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: layout(ipv6: false, mss: 1460, hdrExtra: 0), into: scratch.bytes, emit: emit)
            }
        }
        verify(segments, original: frame, ipv6: false, mss: 500)
    }

    @Test func absurdLayoutsAreRejected() {
        let frame = FrameBuilder.net.tcp(payload: Payload.random(3000))
        let scratch = FrameScratchBuffer()
        func attempt(_ l: SegmentationLayout, _ f: [UInt8] = frame) -> FrameError? {
            withScattered(f, cuts: [10]) { pieces -> FrameError? in
                do {
                    try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: l, into: scratch.bytes) { _ in Issue.record("emitted") }
                    return nil
                } catch let e as FrameError { return e } catch { return nil }
            }
        }
        let good = layout(ipv6: false, mss: 1460, hdrExtra: 0)
        var l = good; l.segmentSize = 0
        #expect(attempt(l) == .segmentSize(0))
        l = good; l.segmentSize = -5
        #expect(attempt(l) != nil)
        l = good; l.headerLength = 5000
        #expect(attempt(l) == .headerLength(5000, frameLength: frame.count))
        l = good; l.headerLength = Int.max
        #expect(attempt(l) != nil)
        l = good; l.headerLength = 40 // before the end of the TCP header
        #expect(attempt(l) != nil)
        l = good; l.transportOffset = 20 // inside the IP header
        #expect(attempt(l) != nil)
        l = good; l.networkOffset = -1
        #expect(attempt(l) != nil)
        l = good; l.networkOffset = Int.min; l.transportOffset = Int.max
        #expect(attempt(l) != nil)
        l = good; l.network = .ipv6 // the bytes say IPv4
        #expect(attempt(l) != nil)
        var badIHL = frame; badIHL[14] = 0x4F // IHL 60 > room before TCP
        #expect(attempt(good, badIHL) != nil)
        badIHL[14] = 0x43
        #expect(attempt(good, badIHL) != nil)
        // A frame shorter than its headers.
        #expect(attempt(good, Array(frame[..<40])) != nil)
        // A buffer that cannot even hold the headers.
        let tiny = FrameScratchBuffer(capacity: 54)
        let e = withScattered(frame, cuts: []) { pieces -> FrameError? in
            do { try TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: good, into: tiny.bytes) { _ in }; return nil } catch let e as FrameError { return e } catch { return nil }
        }
        #expect(e != nil)
    }

    @Test func randomLayoutsNeverTrap() {
        var r = TestRandom(seed: 77)
        let frames = [FrameBuilder.net.tcp(payload: Payload.random(4000)), FrameBuilder.net.tcp(ipv6: true, payload: Payload.random(300))]
        let scratch = FrameScratchBuffer(capacity: 1600)
        for i in 0 ..< 3000 {
            var f = frames[i % 2]
            for _ in 0 ..< r.below(3) { f[r.below(80)] = UInt8(truncatingIfNeeded: r.next()) }
            let l = SegmentationLayout(network: r.below(2) == 0 ? .ipv4 : .ipv6, transport: r.below(2) == 0 ? .tcp : .udp,
                                       networkOffset: r.below(40), transportOffset: r.below(100),
                                       headerLength: r.below(200), segmentSize: r.below(3000) - 10)
            withScattered(f, cuts: [r.below(f.count)]) { pieces in
                _ = try? TSOSegmenter.segment(ScatteredFrame(pieces)!, layout: l, vlanTag: r.below(2) == 0 ? nil : 7, into: scratch.bytes) { seg in
                    #expect(seg.count <= 1600)
                }
            }
        }
    }
}

@Suite struct TSOExtensionHeaderTests {
    @Test func ipv6WithHopByHopThroughVirtioPath() throws {
        let payload = Payload.random(5000)
        let tcp = FrameBuilder.net.tcpHeader(seq: 77, flags: [.ack, .psh]) + payload
        let hbh: [UInt8] = [6, 0, 1, 4, 0, 0, 0, 0]
        var frame = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: hbh.count + tcp.count, next: 0) + hbh + tcp
        let l4 = 14 + 48
        frame.put16(~FrameBuilder.pseudoHeaderSum(frame, ip: 14, proto: 6, length: tcp.count), at: l4 + 16)
        let scratch = FrameScratchBuffer()
        let out = try withScattered(frame, cuts: [58]) { pieces in
            try collectSegments { emit in
                try SoftwareOffload.complete(pieces, header: VirtioNetHeader(gsoType: VirtioNetHeader.GSOType.tcpv6.rawValue, gsoSize: 1440),
                                             maxFrameSize: 1514, buffer: scratch.bytes, emit: emit)
            }
        }
        let mss = 1514 - (l4 + 20) // gso_size 1440 cut to what a 1514-byte frame holds
        #expect(out.count == (5000 + mss - 1) / mss)
        for (i, s) in out.enumerated() {
            #expect(Int(s.be16(18)) == s.count - 54) // payload length covers the extension header
            #expect(Array(s[54 ..< 62]) == hbh)
            #expect(s.be32(l4 + 4) == 77 &+ UInt32(i * mss))
            #expect(FrameBuilder.transportChecksumValid(s, ip: 14, l4: l4, proto: 6))
            #expect(ChecksumOffload.verify(s).transport == .good)
        }
    }

    @Test func routingHeaderIsNotVerified() throws {
        let tcp = FrameBuilder.net.tcpHeader(seq: 1, flags: [.ack])
        let routing: [UInt8] = [6, 2, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0xAB, count: 16)
        let frame = FrameBuilder.net.ethernet(type: 0x86DD) + FrameBuilder.net.ipv6Header(payloadLength: routing.count + tcp.count, next: 43) + routing + tcp
        let p = try #require(FrameParser.parse(frame))
        #expect(p.hasIPv6RoutingHeader && p.isTCP)
        #expect(ChecksumOffload.verify(frame).transport == .notChecked)
        // Segmented in software, each segment's sum would use the first hop's address
        // where RFC 8200 §8.1 wants the final destination: refused.
        let big = FrameBuilder.net.ethernet(type: 0x86DD)
            + FrameBuilder.net.ipv6Header(payloadLength: routing.count + tcp.count + 3000, next: 43) + routing + tcp
            + [UInt8](repeating: 7, count: 3000)
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv6.rawValue,
                                     gsoSize: 1000, checksumStart: UInt16(54 + routing.count), checksumOffset: 16)
        let buffer = FrameScratchBuffer()
        #expect(throws: FrameError.self) {
            try big.withUnsafeBytes { raw in
                try SoftwareOffload.complete([raw], header: header, maxFrameSize: 1514, buffer: buffer.bytes) { _ in }
            }
        }
    }
}
