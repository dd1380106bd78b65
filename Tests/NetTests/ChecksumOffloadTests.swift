import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct ChecksumOffloadTests {
    @Test(arguments: [false, true])
    func completesTCPAndUDP(ipv6: Bool) throws {
        let l4 = ipv6 ? 54 : 34
        for (frame, field, proto) in [(FrameBuilder.net.tcp(ipv6: ipv6, payload: Payload.random(777)), 16, UInt8(6)),
                                      (FrameBuilder.net.udp(ipv6: ipv6, payload: Payload.random(333)), 6, UInt8(17))] {
            var f = FrameBuilder.withPartialChecksum(frame) // as a driver hands it over with NEEDS_CSUM
            try f.withUnsafeMutableBytes { try ChecksumOffload.complete($0, start: l4, offset: field) }
            #expect(FrameBuilder.transportChecksumValid(f, ip: 14, l4: l4, proto: proto))
            #expect(ChecksumOffload.verify(f).transport == .good)
        }
    }

    @Test func e1000StyleInsertWithEnd() throws {
        // TUCSE: the sum stops before trailing bytes the checksum must not cover.
        var frame = FrameBuilder.withPartialChecksum(FrameBuilder.net.udp(payload: Payload.random(100)))
        frame += [0xAA, 0xBB, 0xCC] // e.g. padding the checksum must not include
        try frame.withUnsafeMutableBytes { try ChecksumOffload.insert($0, start: 34, end: $0.count - 3, field: 40) }
        #expect(FrameBuilder.transportChecksumValid(Array(frame.dropLast(3)), ip: 14, l4: 34, proto: 17))
        // IXSM through the same call: IPCSS 14, IPCSE 33, IPCSO 24.
        frame.put16(0, at: 24)
        try frame.withUnsafeMutableBytes { try ChecksumOffload.insert($0, start: 14, end: 34, field: 24) }
        #expect(FrameBuilder.ipv4HeaderValid(frame, ip: 14))
    }

    @Test func ipv4HeaderChecksum() throws {
        var frame = FrameBuilder.net.tcp(payload: [1, 2, 3], ipOptions: [1, 1, 1, 0])
        frame.put16(0xDEAD, at: 24)
        try frame.withUnsafeMutableBytes { try ChecksumOffload.insertIPv4HeaderChecksum($0, ipOffset: 14) }
        #expect(FrameBuilder.ipv4HeaderValid(frame, ip: 14))
        var bad = frame; bad[14] = 0x42
        #expect(throws: FrameError.self) { try bad.withUnsafeMutableBytes { try ChecksumOffload.insertIPv4HeaderChecksum($0, ipOffset: 14) } }
        #expect(throws: FrameError.self) { try frame.withUnsafeMutableBytes { try ChecksumOffload.insertIPv4HeaderChecksum($0, ipOffset: 1000) } }
        #expect(throws: FrameError.self) { try frame.withUnsafeMutableBytes { try ChecksumOffload.insertIPv4HeaderChecksum($0, ipOffset: -1) } }
    }

    @Test func zeroResultIsSentAsFFFF() throws {
        // 16 bytes summing to 0xFFFF with a zero field: the checksum would be 0.
        var data: [UInt8] = [0xFF, 0xFF, 0, 0] + [UInt8](repeating: 0, count: 12)
        try data.withUnsafeMutableBytes { try ChecksumOffload.insert($0, start: 0, end: 16, field: 2) }
        #expect(data.be16(2) == 0xFFFF)
    }

    @Test func badRangesThrowAndLeaveTheFrame() {
        let frame = FrameBuilder.net.tcp(payload: [1, 2, 3])
        for (start, offset) in [(-1, 16), (34, 100_000), (Int.max, 1), (34, Int.max), (frame.count - 1, 0), (frame.count + 1, 0), (0, -4)] {
            var f = frame
            #expect(throws: FrameError.self) { try f.withUnsafeMutableBytes { try ChecksumOffload.complete($0, start: start, offset: offset) } }
            #expect(f == frame)
        }
        var f = frame
        #expect(throws: FrameError.self) { try f.withUnsafeMutableBytes { try ChecksumOffload.insert($0, start: 40, end: 30, field: 50) } }
        #expect(throws: FrameError.self) { try f.withUnsafeMutableBytes { try ChecksumOffload.insert($0, start: 0, end: 10_000, field: 50) } }
    }

    @Test func receiveVerdicts() {
        let good = FrameBuilder.net.tcp(payload: Payload.random(99))
        var v = ChecksumOffload.verify(good)
        #expect(v.ipv4Header == .good && v.transport == .good && v.dataValid && !v.transportIsUDP)

        var badTCP = good; badTCP[good.count - 1] ^= 1
        v = ChecksumOffload.verify(badTCP)
        #expect(v.ipv4Header == .good && v.transport == .bad && !v.dataValid)

        var badIP = good; badIP[22] ^= 1 // TTL
        #expect(ChecksumOffload.verify(badIP).ipv4Header == .bad)

        var noUDPChecksum = FrameBuilder.net.udp(payload: [1, 2, 3])
        noUDPChecksum.put16(0, at: 40)
        v = ChecksumOffload.verify(noUDPChecksum)
        #expect(v.transport == .notChecked && v.transportIsUDP)

        var zeroUDPv6 = FrameBuilder.net.udp(ipv6: true, payload: [1, 2, 3])
        zeroUDPv6.put16(0, at: 60)
        #expect(ChecksumOffload.verify(zeroUDPv6).transport == .bad)

        let v6 = ChecksumOffload.verify(FrameBuilder.net.tcp(ipv6: true, vlan: 3, payload: Payload.random(5)))
        #expect(v6.ipv4Header == .notChecked && v6.transport == .good)

        var padded = FrameBuilder.net.udp(payload: [7])
        padded += [UInt8](repeating: 0x55, count: 17)
        #expect(ChecksumOffload.verify(padded).transport == .good)

        // The UDP length, not the IP payload, bounds the datagram (RFC 768): a checksum valid
        // over the IP payload with a shorter UDP length is bad; one valid over the UDP length
        // with bytes after it in the IP payload is good. (Seen from a hostile peer: e1000
        // reported the first good, and Linux trusted it.)
        let datagram = FrameBuilder.net.udp(payload: [UInt8](repeating: 0x41, count: 8))   // UDP length 16
        var shortLength = datagram; shortLength.put16(12, at: 38)
        shortLength.put16(0, at: 40)
        let wrongSum = ~NaiveChecksum.sum(Array(shortLength[34...]), initial: FrameBuilder.pseudoHeaderSum(shortLength, proto: 17, length: 16))
        shortLength.put16(wrongSum, at: 40)   // right over all 16 bytes, with the 12 the header claims
        #expect(ChecksumOffload.verify(shortLength).transport == .bad)
        var trailing = FrameBuilder.net.udp(payload: [UInt8](repeating: 0x41, count: 4))   // UDP length 12
        trailing.insert(contentsOf: [9, 9, 9, 9], at: 34 + 12)           // 4 bytes after the datagram, inside IP
        trailing.put16(UInt16(20 + 16), at: 16)
        trailing.put16(0, at: 24)
        trailing.put16(~NaiveChecksum.sum(Array(trailing[14 ..< 34])), at: 24)
        #expect(ChecksumOffload.verify(trailing).ipv4Header == .good && ChecksumOffload.verify(trailing).transport == .good)
        for length: UInt16 in [0, 7, 17] {
            var malformed = datagram; malformed.put16(length, at: 38)
            #expect(ChecksumOffload.verify(malformed).transport == .bad)
        }

        let arp = FrameBuilder.net.ethernet(type: 0x0806) + [UInt8](repeating: 0, count: 28)
        #expect(ChecksumOffload.verify(arp) == ChecksumOffload.Verdicts())

        // Verifying while copying (a receive path into guest memory) gives the same
        // verdicts, and copies the frame exactly when it summed a segment.
        for frame in [good, badTCP, badIP, noUDPChecksum, zeroUDPv6, padded, shortLength, trailing, arp,
                      FrameBuilder.net.tcp(payload: Payload.random(1400)), FrameBuilder.net.udp(ipv6: true, payload: Payload.random(9000))] {
            var destination = [UInt8](repeating: 0xEE, count: frame.count)
            let copied = frame.withUnsafeBytes { f in destination.withUnsafeMutableBytes { ChecksumOffload.verify(f, copyingTo: $0.baseAddress!) } }
            #expect(copied == ChecksumOffload.verify(frame))
            #expect(destination == (copied.transportSegment == nil ? [UInt8](repeating: 0xEE, count: frame.count) : frame))
        }
    }
}

/// Fuzz finding F2: an IPv4 header offset near Int.max made the error path overflow.
@Test func ipv4HeaderChecksumAtAbsurdOffsetThrows() {
    var frame = [UInt8](repeating: 0x45, count: 64)
    frame.withUnsafeMutableBytes { buffer in
        for offset in [Int.max, Int.max - 10, -1, Int.min, 64] {
            #expect(throws: FrameError.self) { try ChecksumOffload.insertIPv4HeaderChecksum(buffer, ipOffset: offset) }
        }
    }
}
