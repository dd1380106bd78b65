import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// Issue 12's virtio-net cases: every kick and every backend frame costs a bounded amount
/// of work, measured by the device's `ActionCostMeter`, and waiting for guest buffers
/// never spins.
@Suite struct BoundedCostTests {
    func tcpGSO(size: UInt16, type: VirtioNetHeader.GSOType = .tcpv4, payload: Int = 3000) -> (VirtioNetHeader, [UInt8]) {
        let frame = FrameBuilder.virtioNet.tcp(payload: Payload.counting(payload), id: 7)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.needsChecksum
        h.gsoType = type.rawValue
        h.gsoSize = size
        h.headerLength = 54
        h.checksumStart = 34
        h.checksumOffset = 16
        return (h, frame)
    }

    /// Case 3: a GSO chain asking for 1-byte segments is malformed: dropped, counted, no
    /// frame sent (it used to become one frame per payload byte under the device lock).
    @Test func gsoBelowTheSmallestSegmentIsDropped() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3)
        let (h, frame) = tcpGSO(size: 1)
        d.send(frame, header: h)
        #expect(d.endpoint.sent.isEmpty)
        #expect(try #require(d.device).counters.drops(.malformed) == 1)
        let (ok, frame2) = tcpGSO(size: 1000)
        d.send(frame2, header: ok)
        #expect(d.endpoint.sent.count == 3)
    }

    /// GSO the driver did not negotiate is a guest error (virtio 1.2 §5.1.6.2.1).
    @Test func gsoWithoutTheNegotiatedFeatureIsDropped() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3) { $0 & ~(NetF.hostTSO4 | NetF.hostTSO6) }
        let (h, frame) = tcpGSO(size: 1000)
        d.send(frame, header: h)
        #expect(d.endpoint.sent.isEmpty)
    }

    /// A GSO frame above 64 KiB plus headers is malformed, however the chain spells it.
    @Test func gsoAboveSixtyFourKiBIsDropped() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3)
        let (h, frame) = tcpGSO(size: 1400, payload: 60_000)
        d.send(frame + Payload.counting(6_000), header: h) // 66 KiB in the chain
        #expect(d.endpoint.sent.isEmpty)
        d.send(frame, header: h)                              // 60 KiB: fine
        #expect(!d.endpoint.sent.isEmpty)
        _ = d.endpoint.takeSent()
        d.send(frame + Payload.counting(6_000), header: h)
        #expect(d.endpoint.sent.isEmpty)
    }

    /// A kick over a full queue of maximal GSO chains stops at the budget and continues
    /// from the I/O loop; no action exceeds the device's budget (`ActionCostMeter.budget`).
    @Test func aKickDefersWhatIsBeyondTheBudget() throws {
        let d = try VirtioNetDriver(options: "queue-size=256")
        d.bringUp(queueCount: 3)
        let (h, frame) = tcpGSO(size: 8, payload: 60_000)
        let header = d.buffer(headerBytes(h)), data = d.buffer(frame)
        for _ in 0 ..< 8 { d.queues[1]?.addChain([(header, 12, false), (data, UInt32(frame.count), false)]) }
        let meter = d.nic.function.cost
        meter.resetWorst()
        d.kick(1)
        let firstPass = d.endpoint.takeSent().count
        #expect(firstPass > 0 && firstPass < 8 * 7500) // deferred
        var turns = 0
        while d.machine.loop.runQueuedWork() > 0 && turns < 100 { turns += 1 }
        #expect(firstPass + d.endpoint.takeSent().count == 8 * 7500)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }

    /// One-buffer chains (`popReadableBuffer`, no walk) are charged one descriptor each, as
    /// the walk charges them: a kick over 1,000 of them, runts and frames alternating,
    /// stops at the budget's 256 descriptors (before the 500 frames' own budget would) and
    /// the loop sends the rest; every chain comes back once, in order.
    @Test func oneBufferChainsAreChargedAndDeferred() throws {
        let d = try VirtioNetDriver(options: "queue-size=1024")
        d.bringUp(queueCount: 3)
        let tx = try #require(d.queues[1])
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60))
        let good = d.buffer(headerBytes(VirtioNetHeader()) + frame), runt = d.buffer(headerBytes(VirtioNetHeader()))
        for i in 0 ..< 1_000 {
            if i % 2 == 0 { tx.addChain([(good, UInt32(12 + frame.count), false)]) } else { tx.addChain([(runt, 12, false)]) }
        }
        let meter = d.nic.function.cost
        meter.resetWorst()
        d.kick(1)
        var used = tx.takeUsed().map(\.id)
        #expect(used.count == 256) // one descriptor each: deferred at the budget's 256
        var turns = 0
        while d.machine.loop.runQueuedWork() > 0 && turns < 100 { turns += 1 }
        used += tx.takeUsed().map(\.id)
        #expect(used == (0 ..< 1_000).map { UInt32($0) })
        #expect(d.endpoint.takeSent().count == 500)
        #expect(d.device?.counters.drops(.malformed) == 500)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }

    /// A delivery of 64 frames is one action: with a receive chain of 1,000 one-byte
    /// buffers that each frame walks and gives back (too small, dropped), it stops at the
    /// budget; the backend keeps the rest and is asked for them again from the loop.
    @Test func aDeliveryStopsAtTheBudget() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3) { $0 & ~NetF.mrgRxbuf }
        let rx = try #require(d.queues[0])
        let byte = d.buffer(zeroed: 1)
        _ = rx.addIndirect(Array(repeating: (byte, 1, true), count: 1000), allocator: d.machine.allocator)
        d.kick(0)
        let frames = Array(repeating: FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1500)), count: 64)
        let meter = d.nic.function.cost
        meter.resetWorst()
        var taken = d.endpoint.deliver(frames)
        #expect(taken >= 1 && taken < 64, "one delivery took \(taken) of 64 frames")
        for _ in 0 ..< 100 where taken < 64 {
            let resumes = d.endpoint.resumeCount
            _ = d.machine.loop.runQueuedWork()
            #expect(d.endpoint.resumeCount == resumes + 1, "the backend was not asked again")
            taken += d.endpoint.deliver(Array(frames[taken...]))
        }
        #expect(taken == 64)
        #expect(d.device?.counters.drops(.oversized) == 64)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }

    /// Case 4: with MRG_RXBUF and buffers too small for a pending frame, the device waits
    /// for the driver to add more instead of taking back its own chains and retrying forever.
    @Test func mergeableReceiveWaitsWithoutSpinning() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3)
        d.postReceiveBuffers(2, size: 256)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(1400))
        #expect(d.endpoint.inject(frame) == false) // held by the backend
        #expect(d.machine.loop.runQueuedWork() == 0)   // no retry queued: nothing new was posted
        #expect(d.endpoint.resumeCount == 0)
        d.postReceiveBuffers(6, size: 256)             // enough now, and the kick says so
        #expect(d.endpoint.resumeCount == 1)
    }

    /// A control queue of 1,024 chains, each a 1,024-entry indirect table copying 12 KiB:
    /// one kick once walked a million descriptors uncharged. Now each chain is charged what
    /// its walk visited and the bytes copied, a kick stops at the budget, and the I/O loop
    /// finishes the queue in later actions, every one within the budget plus one chain.
    @Test func controlCommandsAreChargedAndContinueFromTheLoop() throws {
        let d = try VirtioNetDriver(options: "queue-size=1024")
        d.bringUp(queueCount: 3)
        let cq = try #require(d.queues[2])
        let payload = d.buffer([UInt8](repeating: 0xEE, count: 12))   // class 0xEE: unknown, answered ERR
        let ack = d.buffer(zeroed: 1)
        var entries: [(address: GuestAddress, length: UInt32, writable: Bool)] = Array(repeating: (payload, 12, false), count: 1023)
        entries.append((ack, 1, true))
        let head = cq.addIndirect(entries, allocator: d.machine.allocator)
        for _ in 1 ..< 1024 { cq.publish(head) }
        let meter = d.nic.function.cost
        meter.resetWorst()
        d.kick(2)
        let first = cq.takeUsed().count
        #expect(first >= 1 && first < 1024, "one kick answered \(first) of 1024 commands")
        var answered = first
        for _ in 0 ..< 2000 where answered < 1024 {
            _ = d.machine.loop.runQueuedWork()
            answered += cq.takeUsed().count
        }
        #expect(answered == 1024)
        // One chain of 1,024 descriptors past a budget of 256: the budget and one chain at most.
        #expect(meter.worst.descriptors <= 256 + 1024, "worst action: \(meter.worst)")
        #expect(meter.worst.descriptors >= 1024, "worst action: \(meter.worst)")
    }
}
