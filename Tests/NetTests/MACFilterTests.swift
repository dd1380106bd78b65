import Testing
import VMMCore
@testable import VMMNet
import VMMTestKit

@Suite struct MACFilterTests {
    let own = MACAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
    let other: [UInt8] = [0x52, 0x54, 0x00, 0x99, 0x99, 0x99]
    let group: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB]
    let otherGroup: [UInt8] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]
    let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    func frame(_ dst: [UInt8]) -> [UInt8] { FrameBuilder.net.addressed(to: dst).ethernet(type: 0x0800, payload: [UInt8](repeating: 0, count: 46)) }

    @Test func classes() {
        #expect(frame(own.array).withUnsafeBytes { FrameAddressClass(destinationOf: $0) } == .unicast)
        #expect(frame(group).withUnsafeBytes { FrameAddressClass(destinationOf: $0) } == .multicast)
        #expect(frame(broadcast).withUnsafeBytes { FrameAddressClass(destinationOf: $0) } == .broadcast)
        #expect(([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE] as [UInt8]).withUnsafeBytes { FrameAddressClass(destinationOf: $0) } == .multicast)
        #expect(([0xFF] as [UInt8]).withUnsafeBytes { FrameAddressClass(destinationOf: $0) } == nil)
    }

    @Test func defaultFilterAcceptsOwnAndBroadcast() {
        let f = MACFilter(addresses: [own, MACAddress(group)])
        #expect(f.evaluate(frame(own.array)) == .init(accepted: true, addressClass: .unicast))
        #expect(f.evaluate(frame(other)) == .init(accepted: false, addressClass: .unicast))
        #expect(f.evaluate(frame(group)) == .init(accepted: true, addressClass: .multicast))
        #expect(f.evaluate(frame(otherGroup)) == .init(accepted: false, addressClass: .multicast))
        #expect(f.evaluate(frame(broadcast)) == .init(accepted: true, addressClass: .broadcast))
        #expect(f.contains(own) && !f.contains(MACAddress(other)))
    }

    @Test func modes() {
        var f = MACFilter(addresses: [own])
        f.acceptBroadcast = false
        #expect(!f.evaluate(frame(broadcast)).accepted)
        f.allMulticast = true
        #expect(f.evaluate(frame(otherGroup)).accepted && !f.evaluate(frame(other)).accepted)
        f.allUnicast = true
        #expect(f.evaluate(frame(other)).accepted && !f.evaluate(frame(broadcast)).accepted)
        f = MACFilter(addresses: [own, MACAddress(group)])
        f.blockUnicast = true; f.blockMulticast = true
        #expect(!f.evaluate(frame(own.array)).accepted && !f.evaluate(frame(group)).accepted && f.evaluate(frame(broadcast)).accepted)
        f.promiscuous = true
        for d in [own.array, other, group, otherGroup, broadcast] { #expect(f.evaluate(frame(d)).accepted) }
        #expect(!f.evaluate([0x52, 0x54] as [UInt8]).accepted)
        f.setAddresses([])
        f.promiscuous = false; f.blockUnicast = false
        #expect(!f.evaluate(frame(own.array)).accepted)
        f.add(own)
        #expect(f.evaluate(frame(own.array)).accepted)
    }

    @Test func sizeClasses() {
        let expectations: [(Int, FrameSizeClass)] = [(0, .upTo64), (64, .upTo64), (65, .upTo127), (127, .upTo127), (128, .upTo255),
                                                    (511, .upTo511), (512, .upTo1023), (1024, .upTo1522), (1522, .upTo1522), (1523, .over1522)]
        for (n, c) in expectations { #expect(FrameSizeClass(length: n) == c, "\(n)") }
    }
}
