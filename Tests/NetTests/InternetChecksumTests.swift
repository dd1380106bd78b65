import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct InternetChecksumTests {
    @Test func rfc1071Example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        var c = InternetChecksum()
        c.add([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7])
        #expect(c.folded == 0xDDF2)
        #expect(c.checksum == 0x220D)
    }

    @Test func ipv4HeaderVector() {
        // A commonly cited IPv4 header whose checksum is 0xB861.
        let header: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
                               0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7]
        #expect(InternetChecksum.checksum(header) == 0xB861)
        var filled = header
        filled.put16(0xB861, at: 10)
        #expect(filled.withUnsafeBytes { InternetChecksum.isValid($0) })
    }

    @Test func emptyAndSingleByte() {
        #expect(InternetChecksum.checksum([]) == 0xFFFF)
        #expect(InternetChecksum.checksum([0xAB]) == ~UInt16(0xAB00))
    }

    /// The copying sum (`add(copying:to:)`, one pass on AVX2 machines) copies every byte
    /// and sums as `add(_:)` does, at every length and alignment and after an odd length.
    @Test func copyingAddCopiesAndSumsAsAddDoes() {
        var r = TestRandom(seed: 7)
        let data = r.bytes(10_000)
        for oddBefore in [false, true] {
            for start in 0 ..< 3 {
                for length in Array(0 ..< 300) + [1472, 1480, 1514, 9001] {
                    let source = Array(data[start ..< start + length])
                    var expected = InternetChecksum(), copying = InternetChecksum()
                    if oddBefore { expected.add([0x5A]); copying.add([0x5A]) }
                    expected.add(source)
                    var destination = [UInt8](repeating: 0xEE, count: length + 1)
                    source.withUnsafeBytes { s in destination.withUnsafeMutableBytes { copying.add(copying: s, to: $0.baseAddress!) } }
                    #expect(copying == expected, "length \(length) start \(start) odd \(oddBefore)")
                    #expect(Array(destination[0 ..< length]) == source && destination[length] == 0xEE, "length \(length)")
                }
            }
        }
    }

    @Test func matchesNaiveForAllLengthsAndAlignments() {
        var r = TestRandom(seed: 42)
        let data = r.bytes(700)
        for start in 0 ..< 9 {
            for length in 0 ..< 300 {
                let slice = Array(data[start ..< start + length])
                #expect(InternetChecksum.checksum(slice) == NaiveChecksum.checksum(slice), "start \(start) length \(length)")
            }
        }
        let big = r.bytes(65_535)
        #expect(InternetChecksum.checksum(big) == NaiveChecksum.checksum(big))
    }

    /// Both loops, whichever this CPU would pick: the portable SIMD one and, where AVX2
    /// runs, the 256-bit one (CChecksum), against the naive sum over lengths that end in
    /// every tail, at every alignment, and across the wide loop's 16,384-round flush.
    @Test(arguments: [false, true]) func bothLoopsMatchNaive(wide: Bool) {
        guard !wide || InternetChecksum.wideLoopAvailable else { return }
        var r = TestRandom(seed: wide ? 7 : 8)
        let data = r.bytes(3_000)
        for start in 0 ..< 33 {
            for length in stride(from: 0, to: 2_900, by: 13) {
                data.withUnsafeBytes { all in
                    let slice = UnsafeRawBufferPointer(rebasing: all[start ..< start + length])
                    #expect(InternetChecksum.sum16(slice, wide: wide) == ~NaiveChecksum.checksum(Array(slice)),
                            "start \(start) length \(length)")
                }
            }
        }
        // The wide loop biases each word by 0x8000 (VPMADDWD is signed): all-ones and
        // all-zero words are its extremes, 0x7FFF / 0x8000 the edges of the bias.
        for count in [(1 << 20) + 3, (1 << 21) + 77] {
            for pattern: [UInt8] in [[0xFF, 0xFF], [0, 0], [0xFF, 0x7F], [0x00, 0x80], [0x80, 0x00]] {
                let bytes = (0 ..< count).map { pattern[$0 & 1] }
                bytes.withUnsafeBytes {
                    #expect(InternetChecksum.sum16($0, wide: wide) == ~NaiveChecksum.checksum(bytes), "\(count) bytes of \(pattern)")
                }
            }
        }
    }

    /// All-ones words are the largest each lane adds; 2 MiB + 77 bytes runs the vector loop
    /// past two of its 16,384-round flushes and ends in the scalar tail.
    @Test func allOnesDoesNotOverflow() {
        for count in [1 << 20, (1 << 21) + 77] {
            let ones = [UInt8](repeating: 0xFF, count: count)
            #expect(InternetChecksum.checksum(ones) == NaiveChecksum.checksum(ones), "\(count) bytes")
        }
    }

    @Test func scatteredBuffersWithOddSplits() {
        var r = TestRandom(seed: 9)
        for _ in 0 ..< 200 {
            let data = r.bytes(1 + r.below(400))
            var cuts = (0 ..< r.below(6)).map { _ in r.below(data.count + 1) }.sorted()
            cuts = [0] + cuts + [data.count]
            var c = InternetChecksum()
            for i in 0 ..< cuts.count - 1 {
                c.add(Array(data[cuts[i] ..< cuts[i + 1]]))
            }
            #expect(c.checksum == NaiveChecksum.checksum(data), "cuts \(cuts)")
        }
    }

    @Test func mergingAccumulators() {
        var r = TestRandom(seed: 3)
        let data = r.bytes(101)
        for split in [0, 1, 2, 33, 50, 100, 101] {
            var head = InternetChecksum(); head.add(Array(data[..<split]))
            var tail = InternetChecksum(); tail.add(Array(data[split...]))
            head.add(tail)
            #expect(head.checksum == NaiveChecksum.checksum(data), "split \(split)")
        }
    }

    @Test func incrementalUpdateMatchesRecompute() {
        var r = TestRandom(seed: 11)
        for _ in 0 ..< 500 {
            var data = r.bytes(40)
            let before = NaiveChecksum.checksum(data)
            let field = r.below(20) * 2
            let old = data.be16(field)
            let new = UInt16(truncatingIfNeeded: r.next())
            data.put16(new, at: field)
            let updated = InternetChecksum.updated(before, replacing: old, with: new)
            // Ones'-complement has two zeros; both verify. Compare by validity and value mod 0xFFFF.
            #expect(UInt32(~updated) % 0xFFFF == UInt32(NaiveChecksum.sum(data)) % 0xFFFF)
        }
    }

    @Test func incrementalUpdate32() {
        var header: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
                               0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7]
        let before = NaiveChecksum.checksum(header)
        let old = header.be32(12)
        header.put32(0x0A00_020F, at: 12)
        let after = InternetChecksum.updated(before, replacing: old, with: UInt32(0x0A00_020F))
        header.put16(after, at: 10)
        #expect(NaiveChecksum.sum(header) == 0xFFFF)
    }

    @Test func pseudoHeaders() {
        let frame4 = FrameBuilder.net.tcp(payload: Payload.random(100))
        let ip4 = Array(frame4[14 ..< 34])
        let p4 = ip4.withUnsafeBytes { InternetChecksum.pseudoHeaderIPv4(ipHeader: $0, protocol: 6, length: 120) }
        #expect(p4?.folded == FrameBuilder.pseudoHeaderSum(frame4, ip: 14, proto: 6, length: 120))
        let frame6 = FrameBuilder.net.tcp(ipv6: true, payload: Payload.random(100))
        let ip6 = Array(frame6[14 ..< 54])
        let p6 = ip6.withUnsafeBytes { InternetChecksum.pseudoHeaderIPv6(ipHeader: $0, nextHeader: 6, length: 120) }
        #expect(p6?.folded == FrameBuilder.pseudoHeaderSum(frame6, ip: 14, proto: 6, length: 120))
        // Too short a header: nil, no trap.
        #expect([UInt8](repeating: 0, count: 19).withUnsafeBytes { InternetChecksum.pseudoHeaderIPv4(ipHeader: $0, protocol: 6, length: 0) } == nil)
        #expect([UInt8](repeating: 0, count: 39).withUnsafeBytes { InternetChecksum.pseudoHeaderIPv6(ipHeader: $0, nextHeader: 6, length: 0) } == nil)
    }
}

@Suite struct ChecksumVectorTests {
    @Test func rfc1624Example() {
        // RFC 1624 §4: HC 0xDD2F, m 0x5555 → m' 0x3285 gives HC' 0x0000 (eqn. 3).
        #expect(InternetChecksum.updated(0xDD2F, replacing: UInt16(0x5555), with: UInt16(0x3285)) == 0x0000)
    }

    @Test func scatteredFrameChecksum() throws {
        let data = Payload.random(1001)
        try withScattered(data, cuts: [1, 2, 3, 500, 501, 999]) { pieces in
            let frame = try #require(ScatteredFrame(pieces + [UnsafeRawBufferPointer(start: nil, count: 0)]))
            for (start, count) in [(0, 1001), (1, 1000), (3, 7), (499, 3), (1000, 1), (1001, 0)] {
                #expect(frame.checksum(from: start, count: count)?.checksum == NaiveChecksum.checksum(Array(data[start ..< start + count])))
            }
            #expect(frame.checksum(from: 1000, count: 2) == nil)
            #expect(frame.checksum(from: -1, count: 2) == nil)
            #expect(frame.checksum(from: 5, count: Int.max) == nil)
        }
    }

    @Test func dropReasons() {
        #expect(FrameError.tooLarge(length: 2, limit: 1).dropReason == .oversized)
        #expect(FrameError.segmentSize(0).dropReason == .malformed)
    }
}
