import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

@Suite("virtio-net TX and RX")
struct DataPathTests {
    @Test func transmitSingleMultiAndIndirectChains() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let tx = try #require(d.queues[1])
        let f1 = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60))
        d.send(f1, split: false)                          // header + frame in one descriptor
        let f2 = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(300, seed: 3))
        d.send(f2)                                        // header, frame
        // Header split over two descriptors and the frame over three (ANY_LAYOUT).
        let f3 = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1000, seed: 5))
        let h = headerBytes(VirtioNetHeader())
        tx.addChain([(d.buffer(Array(h[0 ..< 5])), 5, false), (d.buffer(Array(h[5...]) + f3[0 ..< 10]), 17, false),
                     (d.buffer(Array(f3[10 ..< 500])), 490, false), (d.buffer(Array(f3[500...])), UInt32(f3.count - 500), false)])
        d.kick(1)
        let f4 = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(200, seed: 9))
        tx.addIndirect([(d.buffer(h), 12, false), (d.buffer(Array(f4[0 ..< 50])), 50, false), (d.buffer(Array(f4[50...])), UInt32(f4.count - 50), false)],
                       allocator: d.machine.allocator)
        d.kick(1)
        let sent = d.endpoint.takeSent()
        #expect(sent.count == 4)
        #expect(sent.map(\.bytes) == [f1, f2, f3, f4], "frames differ")
        #expect(sent.allSatisfy { $0.header == nil })
        let used = tx.takeUsed()
        #expect(used.count == 4)
        #expect(used.allSatisfy { $0.length == 0 })
        #expect(d.device?.counters.txFrames.load(ordering: .relaxed) == 4)
        #expect(d.msiVectors.contains(2)) // TX queue 1 → vector 2
    }

    @Test func transmitWithLinkDownIsCountedNotStuck() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        d.endpoint.setLink(up: false)
        d.send(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60)))
        #expect(d.endpoint.sent.isEmpty)
        #expect(d.queues[1]?.takeUsed().count == 1)
        #expect(d.device?.counters.drops(.linkDown) == 1)
    }

    /// Linux's one-buffer receive chains take the device's short path
    /// (`Virtqueue.popWritableBuffer`); a chain of another shape between them (here a
    /// header buffer then a frame buffer, as a driver without ANY_LAYOUT posts) is
    /// left for the general walk, not taken or skipped. One delivery, in order.
    @Test func receiveChainsOfEveryShapeInOneDelivery() throws {
        for mergeable in [false, true] {
            let d = try VirtioNetDriver()
            d.bringUp { mergeable ? $0 : $0 & ~NetF.mrgRxbuf }
            let rx = try #require(d.queues[0])
            let first = d.postReceiveBuffers(1, kick: false)[0]
            let header = d.buffer(zeroed: 12), body = d.buffer(zeroed: 1514)
            rx.addChain([(header, 12, true), (body, 1514, true)])
            let third = d.postReceiveBuffers(1)[0]
            let frames = (0 ..< 3).map { FrameBuilder.virtioNet.ethernet(payload: Payload.counting(200, seed: $0)) }
            #expect(d.endpoint.deliver(frames) == 3)
            let used = rx.takeUsed()
            #expect(used.map(\.id) == [0, 1, 3])
            #expect(used.map(\.length) == [UInt32(12 + frames[0].count), UInt32(12 + frames[1].count), UInt32(12 + frames[2].count)])
            #expect(d.bytes(at: try #require(first.checkedAdd(12)), frames[0].count) == frames[0])
            #expect(parseHeader(d.bytes(at: header, 12))?.numBuffers == 1)
            #expect(d.bytes(at: body, frames[1].count) == frames[1])
            #expect(d.bytes(at: try #require(third.checkedAdd(12)), frames[2].count) == frames[2])
            #expect(d.msiVectors == [1])
        }
    }

    @Test func receiveWithoutMergeableBuffers() throws {
        let d = try VirtioNetDriver()
        d.bringUp { $0 & ~NetF.mrgRxbuf }
        let bufs = d.postReceiveBuffers(2)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(100))
        #expect(d.endpoint.inject(frame))
        let used = try #require(d.queues[0]).takeUsed()
        #expect(used.count == 1)
        #expect(used.first?.length == UInt32(12 + frame.count))
        let h = parseHeader(d.bytes(at: bufs[0], 12))
        #expect(h == VirtioNetHeader(numBuffers: 1)) // §5.1.6.4: 1 without MRG_RXBUF
        #expect(d.bytes(at: try #require(bufs[0].checkedAdd(12)), frame.count) == frame)
        #expect(d.msiVectors == [1])
        // A frame bigger than a buffer is dropped; the buffer stays for the next frame.
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(3000))))
        #expect(d.device?.counters.drops(.oversized) == 1)
        #expect(d.endpoint.inject(frame))
        #expect(d.queues[0]?.takeUsed().first?.id == 1)
    }

    /// A receive chain whose first descriptor is shorter than the header (ANY_LAYOUT
    /// allows it; Linux never does it): header and frame run on across the descriptors.
    @Test func receiveHeaderSplitAcrossDescriptors() throws {
        let d = try VirtioNetDriver()
        d.bringUp { $0 & ~NetF.mrgRxbuf }
        let parts = [5, 9, 2000].map { d.machine.allocator.alloc(size: UInt64($0), align: 16) }
        d.queues[0]?.addChain([(parts[0], 5, true), (parts[1], 9, true), (parts[2], 2000, true)])
        d.kick(0)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(100))
        #expect(d.endpoint.inject(frame))
        #expect(d.queues[0]?.takeUsed().first?.length == UInt32(12 + frame.count))
        let written = d.bytes(at: parts[0], 5) + d.bytes(at: parts[1], 9) + d.bytes(at: parts[2], frame.count - 2)
        #expect(parseHeader(Array(written[0 ..< 12])) == VirtioNetHeader(numBuffers: 1))
        #expect(Array(written[12...]) == frame)
    }

    /// A one-descriptor buffer that starts in one RAM region and ends in the next is not
    /// the usual single host buffer: the frame goes in as two pieces, header first.
    @Test(arguments: [true, false])
    func receiveIntoABufferAcrossTwoRegions(mergeable: Bool) throws {
        let boundary: UInt64 = 16 << 20
        let machine = try TestMachine(memory: GuestMemory(layout: [(0, boundary), (boundary, 16 << 20)]))
        let d = try VirtioNetDriver(machine: machine)
        d.bringUp { mergeable ? $0 : $0 & ~NetF.mrgRxbuf }
        let buffer = GuestAddress(boundary - 700)
        d.queues[0]?.addChain([(buffer, 1526, true)])
        d.kick(0)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1400, seed: 4))
        #expect(d.endpoint.inject(frame))
        #expect(d.queues[0]?.takeUsed().first?.length == UInt32(12 + frame.count))
        #expect(parseHeader(d.bytes(at: buffer, 12)) == VirtioNetHeader(numBuffers: 1))
        #expect(d.bytes(at: GuestAddress(boundary - 688), frame.count) == frame)
    }

    @Test func receiveMergeableSpreadsOverBuffers() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let bufs = d.postReceiveBuffers(4, size: 1000)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(2500, seed: 1))
        #expect(d.endpoint.inject(frame))
        let used = try #require(d.queues[0]).takeUsed()
        let total = 12 + frame.count
        #expect(used.map(\.id) == [0, 1, 2])
        #expect(used.map(\.length) == [1000, 1000, UInt32(total - 2000)])
        #expect(parseHeader(d.bytes(at: bufs[0], 12))?.numBuffers == 3)
        let joined = d.bytes(at: bufs[0], 1000) + d.bytes(at: bufs[1], 1000) + d.bytes(at: bufs[2], total - 2000)
        #expect(Array(joined[12...]) == frame)
        // A small frame takes one buffer, num_buffers 1.
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(40))))
        #expect(parseHeader(d.bytes(at: bufs[3], 12))?.numBuffers == 1)
    }

    @Test func receiveBackPressureAndResume() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1400))
        #expect(!d.endpoint.inject(frame)) // no buffers: the backend keeps the frame
        #expect(d.device?.receiveStalls == 1)
        let resumes = d.endpoint.resumeCount
        // Not enough room for a mergeable frame: nothing is taken.
        d.postReceiveBuffers(1, size: 500)
        #expect(d.endpoint.resumeCount == resumes + 1)
        #expect(!d.endpoint.inject(frame))
        #expect(d.queues[0]?.usedIndex == 0)
        d.postReceiveBuffers(2, size: 500)
        #expect(d.endpoint.resumeCount == resumes + 2)
        #expect(d.endpoint.inject(frame))
        #expect(d.queues[0]?.takeUsed().count == 3)
        #expect(d.device?.counters.rxFrames.load(ordering: .relaxed) == 1)
    }

    @Test func framesBeforeDriverOKAreDroppedAndCounted() throws {
        let d = try VirtioNetDriver()
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1, 2, 3])))
        #expect(d.device?.counters.drops(.linkDown) == 1)
    }

    @Test func transmitChainsQueuedBeforeDriverOKGoOutAtDriverOK() throws {
        let d = try VirtioNetDriver()
        d.negotiate()
        d.setupQueue(0); d.setupQueue(1); d.setupQueue(2)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        d.send(frame)
        #expect(d.endpoint.sent.isEmpty)
        d.driverOK()
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
    }

    @Test func multiQueueTransmitOnEveryPair() throws {
        let d = try VirtioNetDriver(options: "queues=2")
        d.bringUp(queueCount: 5)
        let frames = (0 ..< 2).map { FrameBuilder.virtioNet.ethernet(payload: Payload.counting(80, seed: $0)) }
        d.send(frames[0], queue: 1)
        d.send(frames[1], queue: 3)
        #expect(d.endpoint.sent.map(\.bytes) == frames)
        #expect(d.msiVectors.contains(2) && d.msiVectors.contains(4))
    }

    /// §5.1.2: without MQ the device has one pair (and the control queue after it), whatever
    /// `queues=` offered; a kick on another pair's queue is ignored (it was served).
    @Test func withoutMQOnlyTheFirstPairIsServed() throws {
        let d = try VirtioNetDriver(options: "queues=2")
        d.bringUp(queueCount: 4) { $0 & ~NetF.mq }
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(80))
        d.send(frame, queue: 3)
        #expect(d.endpoint.sent.isEmpty)
        d.send(frame, queue: 1)
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
    }

    /// §5.1.4.1: with VIRTIO_NET_F_MTU the device does not pass non-GSO frames longer
    /// than mtu plus the Ethernet header (an 802.1Q tag counts as header).
    @Test func framesAboveTheNegotiatedMTUAreNotPassed() throws {
        let d = try VirtioNetDriver(options: "mtu=1500")
        d.bringUp()
        d.postReceiveBuffers(8, size: 2048)
        let fits = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1500))
        let tagged = FrameBuilder.virtioNet.ethernet(vlan: 7, payload: Payload.counting(1500))
        let tooLong = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1501))
        #expect(fits.count == 1514 && tagged.count == 1518)
        for f in [fits, tagged, tooLong] { #expect(d.endpoint.inject(f)) }
        #expect(d.queues[0]?.takeUsed().count == 2)
        #expect(d.device?.counters.drops(.oversized) == 1)
    }

    @Test func notifyRegistersAreDoorbells() throws {
        let d = try VirtioNetDriver()
        // One doorbell per queue, at the address the notify capability gives (for ioeventfd).
        let bells = d.nic.function.doorbells.doorbells
        #expect(bells.count == 3)
        #expect(bells.map(\.offset) == (0 ..< 3).map { d.notifyCap.offset + UInt64($0) * UInt64(d.notifyCap.extra) })
        #expect(bells.allSatisfy { $0.bar == d.notifyCap.bar && $0.size == 2 && $0.value == nil })
        d.bringUp()
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(70))
        d.queues[1]?.addChain([(d.buffer(headerBytes(VirtioNetHeader()) + frame), UInt32(12 + frame.count), false)])
        bells[1].handler() // what the I/O loop runs when the ioeventfd fires
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
    }

    @Test func multiQueueReceiveSteersFlowsAcrossActivePairs() throws {
        let d = try VirtioNetDriver(options: "queues=4")
        d.bringUp(queueCount: 9)
        for q in [0, 2, 4, 6] { d.postReceiveBuffers(40, queue: q) }
        func flow(_ port: UInt16) -> [UInt8] {
            var f = FrameBuilder.virtioNet.tcp(payload: [1, 2, 3], id: 7)
            f[34] = UInt8(port >> 8); f[35] = UInt8(port & 0xFF)
            return f
        }
        func queueOf(_ frame: [UInt8]) -> Int? {
            let before = [0, 2, 4, 6].map { d.queues[$0]?.usedIndex ?? 0 }
            d.endpoint.inject(frame)
            return [0, 2, 4, 6].indices.first { d.queues[[0, 2, 4, 6][$0]]?.usedIndex != before[$0] }.map { [0, 2, 4, 6][$0] }
        }
        // One pair active until the driver asks for more: everything on receiveq1.
        #expect(Set((0 ..< 8).map { queueOf(flow(UInt16(1000 + $0))) }) == [0])
        #expect(d.control(4, 0, [4, 0], queue: 8) == 0)
        let queues = (0 ..< 32).map { queueOf(flow(UInt16(2000 + $0))) }
        #expect(Set(queues.compactMap { $0 }).count > 1)
        #expect(queues.allSatisfy { $0 != nil })
        // A flow always lands on the same queue; non-IP frames on queue 0.
        #expect(queueOf(flow(2005)) == queues[5])
        #expect(queueOf(FrameBuilder.virtioNet.ethernet(payload: [9])) == 0)
    }

    /// A driver that asks for four pairs but enabled only the first pair's queues (and the
    /// control queue): a flow steered to a pair whose receive queue is not enabled lands
    /// on receiveq1 instead of being dropped.
    @Test func flowSteeredToAQueueNotEnabledFallsBackToTheFirst() throws {
        let d = try VirtioNetDriver(options: "queues=4")
        _ = d.negotiate()
        d.programVectors(queueCount: 9)
        for q in [0, 1, 8] { _ = d.setupQueue(q, vector: UInt16(q + 1)) }
        d.driverOK()
        d.postReceiveBuffers(40, queue: 0)
        #expect(d.control(4, 0, [4, 0], queue: 8) == 0)
        for port in 0 ..< 16 {
            var f = FrameBuilder.virtioNet.tcp(payload: [1, 2, 3], id: 7)
            f[34] = UInt8(3000 >> 8); f[35] = UInt8(port)
            d.endpoint.inject(f)
        }
        #expect(d.queues[0]?.usedIndex == 16)
        #expect(d.device?.counters.drops(.linkDown) == 0)
    }
}
