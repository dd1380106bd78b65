import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

@Suite("virtio-net on packed virtqueues")
struct PackedRingTests {
    static let packed: UInt64 = 1 << 34

    @Test func offeredOnlyWhenAskedFor() throws {
        #expect(try VirtioNetDriver().deviceFeatures & Self.packed == 0)
        let d = try VirtioNetDriver(options: "packed=on")
        #expect(d.deviceFeatures & Self.packed != 0)
        _ = d.bringUpPacked(queueCount: 3)
        #expect(d.transport?.negotiated(Self.packed) == true)
        #expect(d.read(0x1C, 2) == 1)
    }

    @Test func transmitWrapsAroundTheRing() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let qs = d.bringUpPacked(queueCount: 3, size: 6) // not a power of two: allowed for packed rings
        let tx = qs[1]
        var frames: [[UInt8]] = []
        for i in 0 ..< 20 {
            let f = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60 + i, seed: i))
            frames.append(f)
            tx.addChain([(d.buffer(headerBytes(VirtioNetHeader())), 12, false), (d.buffer(f), UInt32(f.count), false)])
            d.kick(1)
            #expect(tx.takeUsed().map(\.id) == [UInt16(i)])
        }
        #expect(d.endpoint.sent.map(\.bytes) == frames)
        // Indirect: one ring slot for the whole chain.
        let f = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(100))
        let id = tx.addIndirect([(d.buffer(headerBytes(VirtioNetHeader())), 12, false), (d.buffer(f), UInt32(f.count), false)],
                                allocator: d.machine.allocator)
        d.kick(1)
        #expect(tx.takeUsed().map(\.id) == [id])
        #expect(d.endpoint.sent.last?.bytes == f)
        #expect(d.status & 64 == 0)
    }

    /// One-buffer chains (taken by `popReadableBuffer`) between chains of two slots and
    /// indirect ones, in one kick and across the wrap of a five-slot ring: buffer IDs no
    /// longer match slots, and every frame still goes out once, in order, each ID used once.
    @Test func oneBufferTransmitChainsAmongOtherShapes() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let tx = d.bringUpPacked(queueCount: 3, size: 5)[1]
        var frames: [[UInt8]] = []
        for round in 0 ..< 4 {
            var ids: [UInt16] = []
            for shape in 0 ..< 3 {
                let f = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60 + round * 3 + shape, seed: round))
                frames.append(f)
                let h = headerBytes(VirtioNetHeader())
                switch (round + shape) % 3 {
                case 0: ids.append(tx.addChain([(d.buffer(h + f), UInt32(12 + f.count), false)]))
                case 1: ids.append(tx.addChain([(d.buffer(h), 12, false), (d.buffer(f), UInt32(f.count), false)]))
                default: ids.append(tx.addIndirect([(d.buffer(h), 12, false), (d.buffer(f), UInt32(f.count), false)],
                                                   allocator: d.machine.allocator))
                }
            }
            d.kick(1)
            #expect(tx.takeUsed().map(\.id) == ids)
        }
        #expect(d.endpoint.sent.map(\.bytes) == frames)
        #expect(d.status & 64 == 0)
    }

    @Test func receiveMergeableAndBackPressure() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let qs = d.bringUpPacked(queueCount: 3, size: 8)
        let rx = qs[0]
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(2500, seed: 3))
        var bufs = [d.machine.allocator.alloc(size: 1000)]
        rx.addChain([(bufs[0], 1000, true)])
        d.kick(0)
        #expect(!d.endpoint.inject(frame)) // not enough room: nothing taken
        #expect(rx.takeUsed().isEmpty)
        for _ in 0 ..< 3 {
            let b = d.machine.allocator.alloc(size: 1000)
            bufs.append(b)
            rx.addChain([(b, 1000, true)])
        }
        d.kick(0)
        #expect(d.endpoint.inject(frame))
        let used = rx.takeUsed()
        #expect(used.map(\.id) == [0, 1, 2])
        #expect(used.map(\.length) == [1000, 1000, UInt32(12 + frame.count - 2000)])
        #expect(parseHeader(d.bytes(at: bufs[0], 12))?.numBuffers == 3)
        let joined = d.bytes(at: bufs[0], 1000) + d.bytes(at: bufs[1], 1000) + d.bytes(at: bufs[2], 12 + frame.count - 2000)
        #expect(Array(joined[12...]) == frame)
        #expect(d.msiVectors.contains(1))
    }

    @Test func driverEventSuppression() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let qs = d.bringUpPacked(queueCount: 3, size: 8)
        let rx = qs[0]
        for _ in 0 ..< 6 { rx.addChain([(d.machine.allocator.alloc(size: 1526), 1526, true)]) }
        d.kick(0)
        rx.setDriverEvent(flags: 1) // disable
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))
        #expect(d.msiVectors.isEmpty)
        rx.setDriverEvent(flags: 0) // enable
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [2]))
        #expect(d.msiVectors == [1])
        // EVENT_IDX: interrupt once the used descriptor at offset 4 (this lap) is written.
        rx.setDriverEvent(flags: 2, offWrap: 4 | 0x8000)
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [3])) // slot 2
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [4])) // slot 3
        #expect(d.msiVectors == [1])
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [5])) // slot 4
        #expect(d.msiVectors == [1, 1])
        #expect(rx.takeUsed().count == 5)
    }

    @Test func deviceEventSuppression() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let tx = d.bringUpPacked(queueCount: 3, size: 4)[1]
        for i in 0 ..< 3 {
            tx.addChain([(d.buffer(headerBytes(VirtioNetHeader()) + FrameBuilder.virtioNet.ethernet(payload: [UInt8(i)])), 27, false)])
        }
        d.kick(1)
        // EVENT_IDX: "notify me when you make descriptor 3 of this lap available".
        #expect(tx.deviceEventFlags == 2)
        #expect(tx.deviceEventOffWrap == 3 | 0x8000)
        let e = try VirtioNetDriver(options: "packed=on,event_idx=off")
        let tx2 = e.bringUpPacked(queueCount: 3, size: 4)[1]
        tx2.addChain([(e.buffer(headerBytes(VirtioNetHeader()) + FrameBuilder.virtioNet.ethernet(payload: [1])), 27, false)])
        e.kick(1)
        #expect(tx2.deviceEventFlags == 0)
        #expect(e.endpoint.sent.count == 1)
    }

    @Test func badPackedChains() throws {
        func broken(_ build: (VirtioNetDriver, PackedDriverQueue) -> Void) throws {
            let d = try VirtioNetDriver(options: "packed=on")
            let tx = d.bringUpPacked(queueCount: 3, size: 4)[1]
            build(d, tx)
            d.kick(1)
            #expect(d.status & 64 != 0)
            #expect(d.msiVectors.contains(0))
            #expect(d.endpoint.sent.isEmpty)
        }
        // Every descriptor says NEXT: a chain longer than the ring.
        try broken { d, tx in
            let b = d.buffer([UInt8](repeating: 0, count: 32)).raw
            for s in (0 ..< UInt16(4)).reversed() { tx.writeDescriptor(s, address: b, length: 4, id: 0, flags: 1, wrap: true) }
        }
        try broken { d, tx in
            tx.writeDescriptor(0, address: d.buffer([0]).raw, length: 16, id: 0, flags: 4 | 1, wrap: true) // INDIRECT|NEXT
        }
        try broken { d, tx in
            tx.writeDescriptor(0, address: d.buffer([0]).raw, length: 15, id: 0, flags: 4, wrap: true) // bad length
        }
        try broken { d, tx in
            tx.writeDescriptor(0, address: 0xE000_0000, length: 32, id: 0, flags: 4, wrap: true) // table not RAM
        }
        try broken { d, tx in
            let table = d.machine.allocator.alloc(size: 16)
            try? d.machine.memory.store(UInt16(4), at: GuestAddress(table.raw + 14)) // nested INDIRECT
            tx.writeDescriptor(0, address: table.raw, length: 16, id: 0, flags: 4, wrap: true)
        }
        try broken { d, tx in
            let b = d.buffer([0]).raw
            tx.writeDescriptor(1, address: b, length: 1, id: 0, flags: 0, wrap: true)
            tx.writeDescriptor(0, address: b, length: 1, id: 0, flags: 2 | 1, wrap: true) // writable then readable
        }
        // Ring sizes beyond the maximum are refused at enable.
        let d = try VirtioNetDriver(options: "packed=on,queue-size=16")
        d.negotiate()
        d.setupPackedQueue(0, size: 17)
        #expect(d.read(0x1C, 2) == 0)
        #expect(d.status & 64 != 0)
    }

    @Test func resetReturnsToCleanPackedRings() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        _ = d.bringUpPacked(queueCount: 3, size: 4)
        d.setStatus(0)
        #expect((0 ..< 3).allSatisfy { d.transport?.queue($0) == nil })
        let tx = d.bringUpPacked(queueCount: 3, size: 4)[1]
        let f = FrameBuilder.virtioNet.ethernet(payload: [7])
        tx.addChain([(d.buffer(headerBytes(VirtioNetHeader()) + f), UInt32(12 + f.count), false)])
        d.kick(1)
        #expect(d.endpoint.sent.map(\.bytes) == [f])
    }
}
