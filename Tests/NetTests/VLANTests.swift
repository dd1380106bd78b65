import Testing
@testable import VMMNet
import VMMTestKit

@Suite struct VLANTests {
    @Test func insertThenStrip() throws {
        let frame = FrameBuilder.net.udp(payload: [1, 2, 3, 4, 5])
        var out = [UInt8](repeating: 0, count: frame.count + 4)
        let n = out.withUnsafeMutableBytes { o in frame.withUnsafeBytes { VLAN.insert(tci: 0xA07B, into: o, from: $0) } }
        #expect(n == frame.count + 4)
        #expect(Array(out[12 ..< 16]) == [0x81, 0x00, 0xA0, 0x7B])
        #expect(Array(out[..<12]) == Array(frame[..<12]) && Array(out[16...]) == Array(frame[12...]))
        #expect(VLAN.vid(0xA07B) == 0x07B && VLAN.priority(0xA07B) == 5)
        #expect(FrameParser.parse(out)?.vlanTCI == 0xA07B)

        let split = try #require(out.withUnsafeBytes { b in VLAN.strip(b).map { ($0.tci, Array($0.addresses) + Array($0.rest)) } })
        #expect(split.0 == 0xA07B && split.1 == frame)

        var copy = out
        let stripped = copy.withUnsafeMutableBytes { b in VLAN.strip(inPlace: b).map { ($0.tci, Array($0.frame)) } }
        #expect(stripped?.0 == 0xA07B && stripped?.1 == frame)
    }

    @Test func insertInPlaceAndScattered() throws {
        let frame = FrameBuilder.net.tcp(payload: Payload.random(50))
        var buffer = frame + [0, 0, 0, 0]
        let n = buffer.withUnsafeMutableBytes { VLAN.insert(tci: 7, inPlace: $0, length: frame.count) }
        #expect(n == frame.count + 4 && buffer.withUnsafeBytes { VLAN.tag(of: $0) } == 7)
        var out = [UInt8](repeating: 0, count: 200)
        let m = withScattered(frame, cuts: [5, 13, 14]) { pieces in
            out.withUnsafeMutableBytes { VLAN.insert(tci: 7, into: $0, from: ScatteredFrame(pieces)!) }
        }
        #expect(m == n && Array(out[..<(frame.count + 4)]) == buffer)
    }

    @Test func refusesWithoutTrapping() {
        let frame = FrameBuilder.net.udp(payload: [1])
        var small = [UInt8](repeating: 0, count: frame.count + 3)
        #expect(small.withUnsafeMutableBytes { o in frame.withUnsafeBytes { VLAN.insert(tci: 1, into: o, from: $0) } } == nil)
        #expect(small.withUnsafeMutableBytes { VLAN.insert(tci: 1, inPlace: $0, length: frame.count) } == nil)
        #expect(small.withUnsafeMutableBytes { VLAN.insert(tci: 1, inPlace: $0, length: -3) } == nil)
        var empty: [UInt8] = []
        #expect(empty.withUnsafeMutableBytes { VLAN.insert(tci: 1, inPlace: $0, length: 0) } == nil)
        #expect(frame.withUnsafeBytes { VLAN.strip($0) } == nil)
        #expect(([0x81, 0x00] as [UInt8]).withUnsafeBytes { VLAN.tag(of: $0) } == nil)
        var shortTagged = FrameBuilder.net.ethernet(type: 0x8100)
        #expect(shortTagged.withUnsafeMutableBytes { VLAN.strip(inPlace: $0) } == nil)
    }
}
