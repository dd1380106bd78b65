import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// Hostile or broken drivers: the device ends in DEVICE_NEEDS_RESET with a config
/// interrupt, or drops the one bad chain — it never traps, spins or reads outside RAM.
@Suite("virtio-net bad input")
struct RobustnessTests {
    static let needsReset: UInt8 = 64

    func ready(_ options: String = "queue-size=16") throws -> (VirtioNetDriver, SplitDriverQueue) {
        let d = try VirtioNetDriver(options: options)
        d.bringUp(queueCount: 3)
        return (d, try #require(d.queues[1]))
    }

    /// The device gave up on the ring: NEEDS_RESET, a config interrupt, nothing sent, and a
    /// reset brings it back to work.
    func expectNeedsResetAndRecovery(_ d: VirtioNetDriver) {
        #expect(d.status & Self.needsReset != 0)
        #expect(d.msiVectors.contains(0))
        #expect(d.endpoint.sent.isEmpty)
        d.kick(1) // further kicks are ignored
        #expect(d.endpoint.sent.isEmpty)
        d.bringUp(queueCount: 3)
        #expect(d.status & Self.needsReset == 0)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60))
        d.send(frame)
        #expect(d.endpoint.sent.last?.bytes == frame)
    }

    @Test func descriptorLoop() throws {
        let (d, tx) = try ready()
        let b = d.buffer(headerBytes(VirtioNetHeader()) + FrameBuilder.virtioNet.ethernet(payload: [1]))
        tx.writeDescriptor(0, address: b.raw, length: 27, flags: 1, next: 0) // next → itself
        tx.publish(0)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
    }

    @Test func chainLongerThanQueue() throws {
        let (d, tx) = try ready()
        let b = d.buffer([UInt8](repeating: 0, count: 64))
        for i in 0 ..< UInt16(16) { tx.writeDescriptor(i, address: b.raw, length: 4, flags: 1, next: (i + 1) % 16) }
        tx.publish(3)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
    }

    /// A chain is at most 1,024 descriptors, an indirect table's entries included (QEMU's
    /// VIRTQUEUE_MAX_SIZE). Not the queue's size: Linux builds longer chains than a small
    /// ring through indirect tables (a send of MAX_SKB_FRAGS + 2 with `queue-size=16`).
    @Test func aChainIsAtMost1024DescriptorsWhateverTheQueueSize() throws {
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(62))   // 76 bytes
        // 19 descriptors through a table, in a ring of 16: Linux's virtio_net does this.
        let (d, tx) = try ready()
        let pieces = 18, size = frame.count / pieces
        let parts = [(d.buffer(headerBytes(VirtioNetHeader())), UInt32(12), false)] + (0 ..< pieces).map { i in
            let bytes = Array(frame[(i * size) ..< (i == pieces - 1 ? frame.count : (i + 1) * size)])
            return (d.buffer(bytes), UInt32(bytes.count), false)
        }
        tx.addIndirect(parts, allocator: d.machine.allocator)
        d.kick(1)
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
        #expect(d.status & Self.needsReset == 0)
        /// A header in the ring, then a table of `entries`: the frame and empty descriptors.
        func chain(tableEntries entries: Int) throws -> VirtioNetDriver {
            let (e, q) = try ready()
            let table = e.machine.allocator.alloc(size: UInt64(16 * entries), align: 16)
            let body = e.buffer(frame)
            for i in 0 ..< entries {
                q.writeDescriptor(UInt16(i), address: body.raw, length: i == 0 ? UInt32(frame.count) : 0,
                                  flags: i == entries - 1 ? 0 : 1, next: UInt16(i + 1), table: table)
            }
            q.writeDescriptor(0, address: e.buffer(headerBytes(VirtioNetHeader())).raw, length: 12, flags: 1, next: 1)
            q.writeDescriptor(1, address: table.raw, length: UInt32(16 * entries), flags: 4, next: 0)
            q.publish(0)
            e.kick(1)
            return e
        }
        let longest = try chain(tableEntries: 1023)                     // 1,024 in all: sent
        #expect(longest.endpoint.sent.map(\.bytes) == [frame])
        expectNeedsResetAndRecovery(try chain(tableEntries: 1024))       // 1,025: refused
    }

    @Test func headAndNextOutOfRange() throws {
        let (d, tx) = try ready()
        tx.publish(500)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
        let (e, tx2) = try ready()
        tx2.writeDescriptor(0, address: e.buffer([0]).raw, length: 1, flags: 1, next: 16)
        tx2.publish(0)
        e.kick(1)
        expectNeedsResetAndRecovery(e)
    }

    @Test func availIndexRunsAway() throws {
        let (d, tx) = try ready()
        tx.setAvailIndex(17) // > queue size past last_avail_idx (§2.7.13.3)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
        // The RX path notices too, when a frame arrives.
        let (e, _) = try ready()
        e.queues[0]?.setAvailIndex(0x8000)
        #expect(e.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1])))
        #expect(e.status & Self.needsReset != 0)
    }

    @Test(arguments: [UInt32(0), UInt32(17), UInt32(16 * 2048)])
    func indirectTableOfBadLength(length: UInt32) throws {
        let (d, tx) = try ready()
        let table = d.machine.allocator.alloc(size: 16 * 4)
        tx.writeDescriptor(0, address: table.raw, length: length, flags: 4, next: 0)
        tx.publish(0)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
    }

    @Test func indirectTableOutsideRAM() throws {
        for address: UInt64 in [0xE000_0000, 0x4000_0000_0000, 0xFFFF_FFFF_FFFF_FFF0] {
            let (d, tx) = try ready()
            tx.writeDescriptor(0, address: address, length: 32, flags: 4, next: 0)
            tx.publish(0)
            d.kick(1)
            expectNeedsResetAndRecovery(d)
        }
    }

    @Test func nestedIndirectAndIndirectWithNext() throws {
        let (d, tx) = try ready()
        let inner = d.machine.allocator.alloc(size: 16)
        let outer = d.machine.allocator.alloc(size: 16)
        tx.writeDescriptor(0, address: inner.raw, length: 16, flags: 4, next: 0, table: outer) // indirect inside indirect
        tx.writeDescriptor(0, address: outer.raw, length: 16, flags: 4, next: 0)
        tx.publish(0)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
        let (e, tx2) = try ready()
        tx2.writeDescriptor(0, address: outer.raw, length: 16, flags: 4 | 1, next: 1)
        tx2.publish(0)
        e.kick(1)
        expectNeedsResetAndRecovery(e)
    }

    @Test func indirectWithoutTheFeature() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3) { $0 & ~NetF.indirect }
        let tx = try #require(d.queues[1])
        tx.addIndirect([(d.buffer(headerBytes(VirtioNetHeader()) + [1]), 13, false)], allocator: d.machine.allocator)
        d.kick(1)
        expectNeedsResetAndRecovery(d)
    }

    @Test func readableAfterWritable() throws {
        let (d, tx) = try ready()
        tx.addChain([(d.buffer([0]), 1, true), (d.buffer([0]), 1, false)])
        d.kick(1)
        expectNeedsResetAndRecovery(d)
    }

    @Test func transmitBufferOutsideRAMDropsOnlyThatChain() throws {
        let (d, tx) = try ready()
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60))
        for address: UInt64 in [0xE000_0000, 32 << 20, 0xFFFF_FFFF_FFFF_FFF0] {
            tx.addChain([(d.buffer(headerBytes(VirtioNetHeader())), 12, false), (GuestAddress(address), 100, false)])
        }
        d.send(frame)
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
        #expect(d.device?.counters.drops(.malformed) == 3)
        #expect(tx.takeUsed().count == 4)
        #expect(d.status & Self.needsReset == 0)
    }

    @Test func receiveBufferOutsideRAMReturnsItEmpty() throws {
        for mergeable in [true, false] {
            let (d, _) = try ready()
            if !mergeable { d.bringUp(queueCount: 3) { $0 & ~NetF.mrgRxbuf } }
            let rx = try #require(d.queues[0])
            rx.addChain([(GuestAddress(0xE000_0000), 2048, true)])
            let good = d.postReceiveBuffers(1)
            #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1])))
            #expect(rx.takeUsed().map(\.length) == [0])
            #expect(d.device?.counters.drops(.malformed) == 1)
            let frame = FrameBuilder.virtioNet.ethernet(payload: [2])
            #expect(d.endpoint.inject(frame))
            #expect(d.bytes(at: try #require(good[0].checkedAdd(12)), frame.count) == frame)
            #expect(d.status & Self.needsReset == 0)
        }
    }

    /// A frame may spread over at most `maximumReceiveDescriptors` descriptors: chains of
    /// a byte each made one frame attempt walk them all (with empty ones and indirect
    /// tables, two million per kick), uncharged. The chains come back empty, the frame is
    /// counted as malformed, and the action stays within its budget.
    @Test func aFrameOverTooManyDescriptorsIsDropped() throws {
        let (d, _) = try ready("queue-size=1024")
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(1, size: 12, kick: false)       // the header's
        d.postReceiveBuffers(999, size: 1)
        let meter = d.nic.function.cost
        meter.resetWorst()
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(900))))
        let used = rx.takeUsed()
        #expect(used.count == VirtioNet.maximumReceiveDescriptors + 1 && used.allSatisfy { $0.length == 0 })
        #expect(d.device?.counters.drops(.malformed) == 1)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
        #expect(d.status & Self.needsReset == 0)
    }

    @Test func ringsOutsideRAMOrMisaligned() throws {
        for (part, address) in [(UInt64(0x20), UInt64(0xE000_0000)), (0x28, 0x4000_0000_0000), (0x30, 0x10_0002), (0x20, 0x10_0008)] {
            let d = try VirtioNetDriver()
            d.negotiate()
            d.nic.programMSIX(vector: 0, data: 0x40)
            d.write(0x10, 2, 0)
            d.write(0x16, 2, 0)
            let q = SplitDriverQueue(index: 0, size: 256, machine: d.machine)
            for (off, a) in [(UInt64(0x20), q.desc.raw), (0x28, q.avail.raw), (0x30, q.used.raw)] {
                d.write(off, 8, off == part ? address : a)
            }
            d.write(0x1C, 2, 1)
            #expect(d.read(0x1C, 2) == 0, "part 0x\(String(part, radix: 16))")
            #expect(d.status & Self.needsReset != 0)
            d.driverOK()
            #expect(d.status & 4 == 0 || d.status & Self.needsReset != 0)
        }
    }

    @Test func receiveNeverOverrunsTheRing() throws {
        // The driver claims 16 chains but wrote garbage heads: NEEDS_RESET, no spin.
        let (d, _) = try ready()
        let rx = try #require(d.queues[0])
        for _ in 0 ..< 16 { rx.publish(0xFFFF) }
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(5000))))
        #expect(d.status & Self.needsReset != 0)
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))) // dropped: device broken
    }

    @Test func resetMidTraffic() throws {
        let (d, tx) = try ready("")
        d.postReceiveBuffers(2)
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1])))
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [2])))
        #expect(!d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [3]))) // backend holds this one
        let resumes = d.endpoint.resumeCount
        tx.addChain([(d.buffer(headerBytes(VirtioNetHeader()) + FrameBuilder.virtioNet.ethernet(payload: [4])), 27, false)]) // not kicked yet
        d.setStatus(0)
        #expect(d.endpoint.resumeCount == resumes + 1) // the held frame is offered again…
        #expect(d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [3]))) // …and dropped while reset
        d.kick(1)
        #expect(d.endpoint.sent.isEmpty)
        #expect(d.read(0x1C, 2) == 0)
        // A fresh bring-up works from clean rings.
        d.bringUp(queueCount: 3)
        d.postReceiveBuffers(1)
        let frame = FrameBuilder.virtioNet.ethernet(payload: [5])
        #expect(d.endpoint.inject(frame))
        d.send(frame)
        #expect(d.endpoint.sent.map(\.bytes) == [frame])
        #expect(d.queues[0]?.takeUsed().count == 1)
    }

    @Test func machineResetReturnsToPowerOn() throws {
        let (d, _) = try ready()
        d.machine.bus.reset()
        #expect(d.transport?.status == [])
        #expect((0 ..< 3).allSatisfy { d.transport?.queue($0) == nil })
    }

    @Test func hugeControlCommandIsRefused() throws {
        let (d, _) = try ready("")
        let big = [UInt8](repeating: 0, count: 70000)
        #expect(d.control(1, 0, big) == 1)
        #expect(d.status & Self.needsReset == 0)
    }

    @Test func runtFramesAreNotSent() throws {
        let (d, tx) = try ready("")
        d.send([1, 2, 3])
        tx.addChain([(d.buffer([0, 0, 0]), 3, false)]) // shorter than the header
        d.kick(1)
        #expect(d.endpoint.sent.isEmpty)
        #expect(d.device?.counters.drops(.malformed) == 2)
        #expect(tx.takeUsed().count == 2)
    }

    /// One-buffer transmit chains take the device's short path (`popReadableBuffer`), with
    /// the checks of the walk's: in one kick, a buffer outside RAM, one whose address plus
    /// length wraps past 2^64, one holding only a header, and a good frame.
    /// The bad three are dropped and returned, the good one sent, in order.
    @Test func oneBufferTransmitChainsAreChecked() throws {
        let (d, tx) = try ready("")
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(100))
        tx.addChain([(GuestAddress(0xE000_0000), 1514, false)])
        tx.addChain([(GuestAddress(UInt64.max - 15), 64, false)])
        tx.addChain([(d.buffer(headerBytes(VirtioNetHeader())), 12, false)])
        tx.addChain([(d.buffer(headerBytes(VirtioNetHeader()) + frame), UInt32(12 + frame.count), false)])
        d.kick(1)
        #expect(d.endpoint.takeSent().map(\.bytes) == [frame])
        #expect(d.device?.counters.drops(.malformed) == 3)
        #expect(tx.takeUsed().map(\.id) == [0, 1, 2, 3])
        #expect(d.status & Self.needsReset == 0)
    }
}
