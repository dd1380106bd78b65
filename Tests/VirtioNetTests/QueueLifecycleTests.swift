import Testing
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// When a ring exists and how many chains it hands out, whatever order a driver writes
/// the registers in (found by a hostile read of the virtio core).
@Suite struct QueueLifecycleTests {
    /// §3.1.1: queues are set up after FEATURES_OK, whose features decide the ring's
    /// layout. An enable before it is ignored (reads back 0); the same queue enabled
    /// after FEATURES_OK works.
    @Test func aQueueEnabledBeforeFeaturesOKIsIgnored() throws {
        let d = try VirtioNetDriver()
        d.setStatus(0)
        d.setStatus(1 | 2) // ACKNOWLEDGE | DRIVER
        d.setupQueue(0)
        #expect(d.read(0x1C, 2) == 0)
        #expect(d.transport?.queue(0) == nil)
        d.bringUp()
        #expect(d.transport?.queue(0) != nil)
        #expect(d.status & 64 == 0)
    }

    /// A driver that moves avail->idx on while the device holds every entry re-offers
    /// descriptors still in use; the ring refuses (QEMU's "Virtqueue size exceeded")
    /// rather than hand them out a second time.
    @Test func aSplitRingHandsOutAtMostItsSize() throws {
        let d = try VirtioNetDriver(options: "queue-size=16")
        d.bringUp()
        d.postReceiveBuffers(16, kick: false)
        let queue = try #require(d.transport?.queue(0) as? SplitVirtqueue)
        var chain = DescriptorChain()
        for _ in 0 ..< 16 { #expect(try queue.pop(into: &chain)) }
        try #require(d.queues[0]).publish(0) // head 0 again, still with the device
        #expect(throws: VirtqueueError.queueSizeExceeded(size: 16)) { try queue.pop(into: &chain) }
    }

    @Test func aPackedRingHandsOutAtMostItsSize() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let rx = d.bringUpPacked(queueCount: 2, size: 4)[0]
        let queue = try #require(d.transport?.queue(0) as? PackedVirtqueue)
        var chain = DescriptorChain()
        for _ in 0 ..< 4 { _ = rx.addChain([(d.buffer(zeroed: 64), 64, true)]) }
        for _ in 0 ..< 4 { #expect(try queue.pop(into: &chain)) }
        _ = rx.addChain([(d.buffer(zeroed: 64), 64, true)]) // slot 0 on the next lap, still with the device
        #expect(throws: VirtqueueError.queueSizeExceeded(size: 4)) { try queue.pop(into: &chain) }
    }

    /// `popReadableBuffer` / `popWritableBuffer` on a split ring take a chain only when its
    /// head's flags are exactly nothing / WRITE; any other shape (NEXT, INDIRECT, the other
    /// direction, an unknown bit) is left, untaken, for `pop(into:)`, which gets the same
    /// head; a head beyond the ring throws as the walk does.
    @Test func aSplitRingTakesOnlyOneBufferChainsWithoutTheWalk() throws {
        let d = try VirtioNetDriver(options: "queue-size=16")
        d.bringUp(queueCount: 3)
        let tx = try #require(d.queues[1])
        let queue = try #require(d.transport?.queue(1) as? SplitVirtqueue)
        let buffer = d.buffer(zeroed: 100)
        var chain = DescriptorChain()
        for flags: UInt16 in [1, 2, 8, 0x8000] {   // NEXT, WRITE, unknown bits
            let head = tx.addChain([(buffer, 100, false)], publish: false)
            tx.writeDescriptor(head, address: buffer.raw, length: 100, flags: flags, next: (head + 1) % 16)
            tx.writeDescriptor((head + 1) % 16, address: buffer.raw, length: 50, flags: 0, next: 0)
            tx.publish(head)
            #expect(try queue.popReadableBuffer() == nil, "flags \(flags)")
            #expect(try queue.pop(into: &chain))
            #expect(chain.head == head)
        }
        // INDIRECT: a table holding one readable buffer, which only the walk opens.
        let indirect = tx.addIndirect([(buffer, 100, false)], allocator: d.machine.allocator)
        #expect(try queue.popReadableBuffer() == nil)
        #expect(try queue.pop(into: &chain))
        #expect(chain.head == indirect && chain.readable == [GuestBuffer(address: buffer, length: 100)])
        let head = tx.addChain([(buffer, 100, false)])
        let taken = try #require(try queue.popReadableBuffer())
        #expect(taken.head == head && taken.buffer == GuestBuffer(address: buffer, length: 100))
        #expect(try queue.popReadableBuffer() == nil)   // none left
        let writable = tx.addChain([(buffer, 100, true)])
        #expect(try queue.popReadableBuffer() == nil)
        #expect(try queue.popWritableBuffer()?.head == writable)
        tx.publish(16)   // a head beyond the ring
        #expect(throws: VirtqueueError.headOutOfRange(16)) { try queue.popReadableBuffer() }
    }

    /// The same on a packed ring, across its wrap: a one-descriptor readable chain is taken
    /// with its buffer ID, anything else is left for `pop(into:)`.
    @Test func aPackedRingTakesOnlyOneBufferChainsWithoutTheWalk() throws {
        let d = try VirtioNetDriver(options: "packed=on")
        let tx = d.bringUpPacked(queueCount: 3, size: 3)[1]
        let queue = try #require(d.transport?.queue(1) as? PackedVirtqueue)
        var chain = DescriptorChain()
        for round in 0 ..< 4 {
            let one = tx.addChain([(d.buffer(zeroed: 64), 64, false)])
            let taken = try #require(try queue.popReadableBuffer(), "round \(round)")
            #expect(taken.head == one && taken.buffer.length == 64)
            let two = tx.addChain([(d.buffer(zeroed: 12), 12, false), (d.buffer(zeroed: 64), 64, false)])
            #expect(try queue.popReadableBuffer() == nil)
            #expect(try queue.popWritableBuffer() == nil)
            #expect(try queue.pop(into: &chain))
            #expect(chain.head == two && chain.readable.count == 2)
            try queue.addUsed(head: one, length: 0)
            try queue.addUsed(head: two, length: 0)
            queue.publishUsed()
            _ = tx.takeUsed()
        }
    }

    /// A reset stops the old rings: one still held somewhere writes nothing into memory
    /// the driver may already have handed to its next setup.
    @Test func aResetDisablesTheOldRings() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let old = try #require(d.transport?.queue(0) as? SplitVirtqueue)
        #expect(old.isEnabled)
        d.setStatus(0)
        #expect(!old.isEnabled)
    }
}
