import Foundation
import Synchronization
import Testing
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

private final class WriterFlags: Sendable {
    let stop = Atomic<Bool>(false)
    let done = Atomic<Bool>(false)
}

/// The device reads a ring's 16-bit fields in one piece while the driver moves them
/// (`ringLoad16` in Sources/Virtio/Rings/RingLayouts.swift). Found by the Linux-driver
/// tier: under load, virtio_net's `avail->idx` moving from 0x7AFB to 0x7B0x was read as
/// 0x7BFB, and the device set DEVICE_NEEDS_RESET on a driver that did nothing wrong.
@Suite struct RingFieldTearingTests {
    /// Another thread moves `avail->idx` between 255 and 256 with one 16-bit store each,
    /// as Linux's `virtqueue_add_split` does. Both are legal (the device has taken nothing,
    /// the queue holds 256), so the device must never see a jump beyond the queue size. A
    /// torn read gives the low byte of 255 with the high byte of 256: 511. It is a race,
    /// but a lopsided one: the old code failed within 60 ms in each of three debug runs.
    @Test func availIndexIsReadInOnePiece() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let rx = try #require(d.queues[0])
        let queue = try #require(d.transport?.queue(0) as? SplitVirtqueue)
        #expect(queue.size == 256 && queue.lastAvailIndex == 0)
        let field = try d.machine.memory.hostRange(GuestAddress(rx.avail.raw + 2), length: 2)
        let address = UInt(bitPattern: field.baseAddress)
        let flags = WriterFlags()
        let writer = Thread {
            defer { flags.done.store(true, ordering: .releasing) }
            guard let index = UnsafeMutablePointer<UInt16>(bitPattern: address) else { return }
            var value: UInt16 = 255
            while !flags.stop.load(ordering: .relaxed) {
                value = value == 255 ? 256 : 255
                index.pointee = value.littleEndian
            }
        }
        writer.start()
        var failure: VirtqueueError?
        var reads = 0
        let deadline = ContinuousClock.now + .milliseconds(500)
        while failure == nil, ContinuousClock.now < deadline {
            for _ in 0 ..< 10_000 {
                do throws(VirtqueueError) { _ = try queue.availableCount() } catch { failure = error; break }
                reads += 1
            }
        }
        flags.stop.store(true, ordering: .relaxed)
        while !flags.done.load(ordering: .acquiring) {}
        #expect(failure == nil, "after \(reads) reads: \(failure.map { "\($0)" } ?? "")")
    }
}
