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
