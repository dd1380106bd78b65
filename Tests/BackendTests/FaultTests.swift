#if canImport(Glibc)
import Glibc
#endif
import NetBackends
import Synchronization
import Testing
import VMMCore
import VMMNet
import VMMTestKit

@Suite struct FaultTests {
    func makeFilter(_ options: String, clock: DeviceClock? = nil) throws -> (FaultFilter, InMemoryEndpoint, RecordingReceiver, RunningLoop) {
        var o = try DeviceSpec.parse("e1000," + options).options
        let config = try #require(try NetBackendConfig.take(from: &o).faults)
        let running = try RunningLoop()
        let wire = InMemoryEndpoint()
        let filter = FaultFilter(wrapping: wire, config: config, eventLoop: running.loop, clock: clock ?? running.loop)
        let receiver = RecordingReceiver()
        filter.start(receiver: receiver)
        return (filter, wire, receiver, running)
    }

    /// The device asks for frames again while the filter is being taken out (QMP): if the
    /// filter is gone when the request runs, the backend must still hear it, since it may
    /// hold a frame the device refused; otherwise receive stays stalled for good.
    @Test func resumeReachesTheBackendAfterTheFilterIsGone() throws {
        var o = try DeviceSpec.parse("e1000,fault-drop=10").options
        let config = try #require(try NetBackendConfig.take(from: &o).faults)
        let loop = try EPollEventLoop()   // not running: queued work waits for runQueuedWork
        let wire = InMemoryEndpoint()
        var filter: FaultFilter? = FaultFilter(wrapping: wire, config: config, eventLoop: loop, clock: loop)
        filter?.resumeReceive()
        filter = nil
        _ = loop.runQueuedWork()
        #expect(wire.resumeCount == 1)
    }

    /// A frame the device refused comes again from the backend: it keeps the decision drawn
    /// for it the first time, so the drops fall as for a device that never refused (same seed).
    @Test func aRefusedFrameKeepsItsDecision() throws {
        func delivered(refusingFirstOffers refuse: Bool) throws -> [Bool] {
            let (_, wire, receiver, running) = try makeFilter("fault-drop=30,fault-seed=7,fault-dir=rx")
            var pattern: [Bool] = []
            for i in 0 ..< 200 {
                let before = receiver.frames.count
                receiver.setAccepting(!refuse)
                let taken = wire.inject(testFrame(i))
                receiver.setAccepting(true)
                if !taken { wire.inject(testFrame(i)) }   // the backend offers it again
                pattern.append(receiver.frames.count > before)
            }
            _ = running
            return pattern
        }
        let steady = try delivered(refusingFirstOffers: false)
        #expect(steady.contains(false) && steady.contains(true))
        #expect(try delivered(refusingFirstOffers: true) == steady)
    }

    @Test func dropRateWithinToleranceAndReproducible() throws {
        var patterns: [[Bool]] = []
        for _ in 0 ..< 2 {
            let (filter, wire, _, running) = try makeFilter("fault-drop=10,fault-seed=1234,fault-dir=tx")
            var pattern: [Bool] = []
            for i in 0 ..< 10_000 { pattern.append(filter.send(testFrame(i)) == .sent) }
            let delivered = wire.sent.count
            let lost = 10_000 - delivered
            #expect((850 ... 1150).contains(lost), "lost \(lost) of 10000 at 10%")
            #expect(filter.counters.drops(.fault) == UInt64(lost))
            #expect(filter.statistics.dropped.load(ordering: .relaxed) == UInt64(lost))
            patterns.append(pattern)
            _ = running
        }
        #expect(patterns[0] == patterns[1], "same seed, same decisions")
        let (other, _, _, _) = try makeFilter("fault-drop=10,fault-seed=99")
        let otherPattern = (0 ..< 10_000).map { other.send(testFrame($0)) == .sent }
        #expect(otherPattern != patterns[0])
    }

    @Test func receiveDirectionDropsDuplicatesAndCorrupts() throws {
        let (filter, wire, receiver, running) = try makeFilter("fault-drop=20,fault-dup=10,fault-corrupt=10,fault-seed=7")
        let frames = 2000
        for i in 0 ..< frames {
            let f = testFrame(i, length: 100)
            running.loop.execute { wire.inject(f) }
        }
        let dropped = { Int(filter.statistics.dropped.load(ordering: .relaxed)) }
        let duplicated = { Int(filter.statistics.duplicated.load(ordering: .relaxed)) }
        #expect(eventually { receiver.frames.count == frames - dropped() + duplicated() })
        #expect((300 ... 500).contains(dropped()), "dropped \(dropped())")
        #expect((100 ... 240).contains(duplicated()), "duplicated \(duplicated())")
        let clean = Set((0 ..< 256).map { testFrame($0, length: 100) })
        let observed = receiver.frames.filter { !clean.contains($0.bytes) }.count
        let corrupted = Int(filter.statistics.corrupted.load(ordering: .relaxed))
        #expect((100 ... 240).contains(corrupted), "corrupted \(corrupted)")
        // Every corrupted frame arrives with a byte flipped (twice when also duplicated).
        #expect(observed >= corrupted && observed <= 2 * corrupted)
    }

    @Test func delayHoldsFramesOnTheClock() throws {
        let clock = VirtualClock()
        let (filter, wire, receiver, running) = try makeFilter("fault-delay=5", clock: clock)
        #expect(filter.send(testFrame(1)) == .sent)
        running.loop.execute { wire.inject(testFrame(2)) }
        usleep(50_000)
        #expect(wire.sent.isEmpty && receiver.frames.isEmpty)
        clock.advance(by: 4_000_000)
        usleep(50_000)
        #expect(wire.sent.isEmpty && receiver.frames.isEmpty)
        clock.advance(by: 1_000_000)
        #expect(eventually { wire.sent.count == 1 && receiver.frames.count == 1 })
        #expect(wire.sent.first?.bytes == testFrame(1) && receiver.frames.first?.bytes == testFrame(2))
    }

    /// A receive delay adds latency, not a throughput cap: frames arriving while others
    /// wait out their delay join behind them (the backend was held back until the first
    /// had gone, one frame per delay period).
    @Test func delayedReceivedFramesDoNotHoldNewOnesBack() throws {
        let clock = VirtualClock()
        let (_, wire, receiver, running) = try makeFilter("fault-delay=5", clock: clock)
        let accepted = Mutex(0)
        for i in 0 ..< 10 {
            running.loop.execute { if wire.inject(testFrame(i)) { accepted.withLock { $0 += 1 } } }
        }
        #expect(eventually { accepted.withLock { $0 } == 10 })
        #expect(receiver.frames.isEmpty)
        clock.advance(by: 5_000_000)
        #expect(eventually { receiver.frames.count == 10 })
        #expect(receiver.frames.map(\.bytes) == (0 ..< 10).map { testFrame($0) })
    }

    @Test func rateLimitPolicesBursts() throws {
        let clock = VirtualClock()
        // 1 Mbit/s: the bucket holds 64 KiB; 100 frames of 1514 bytes at once overflow it.
        let (filter, wire, _, _) = try makeFilter("fault-rate=1", clock: clock)
        for i in 0 ..< 100 { filter.send(testFrame(i, length: 1514)) }
        let first = wire.sent.count
        #expect((40 ... 45).contains(first), "passed \(first)")
        #expect(filter.statistics.rateLimited.load(ordering: .relaxed) == UInt64(100 - first))
        clock.advance(by: 1_000_000_000)   // one second refills 125000 bytes' worth, capped at the bucket
        for i in 0 ..< 100 { filter.send(testFrame(i, length: 1514)) }
        #expect(wire.sent.count - first >= 40)
    }

    @Test func backPressureThroughTheFilter() throws {
        let (filter, wire, receiver, running) = try makeFilter("fault-delay=1")
        receiver.setAccepting(false)
        running.loop.execute { wire.inject(testFrame(1)) }
        #expect(eventually { receiver.refusals >= 1 })
        // While a frame waits for the device, the backend is told to keep its own.
        let kept = Mutex<Bool?>(nil)
        running.loop.execute { kept.withLock { $0 = !wire.inject(testFrame(2)) } }
        #expect(eventually { kept.withLock { $0 } == true })
        receiver.setAccepting(true)
        filter.resumeReceive()
        #expect(eventually { receiver.frames.count == 1 && wire.resumeCount >= 1 })
        // The backend offers its kept frame again after resumeReceive.
        running.loop.execute { wire.inject(testFrame(2)) }
        #expect(eventually { receiver.frames.count == 2 })
        #expect(receiver.frames.map(\.bytes) == [testFrame(1), testFrame(2)])
    }

    /// QMP x-swiftvmm-set-faults: faults put in front of a running backend and taken out
    /// again, without restarting it; reordering lets the next frame overtake. The filter's
    /// timers run on a virtual clock: on the loop's real one, a test thread held up for
    /// the 5 ms reorder window under load saw the held frame go out.
    @Test func liveFaultsOnALinkControl() throws {
        let running = try RunningLoop()
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire, deviceLock: DeviceLock(), loop: running.loop, clock: VirtualClock())
        let receiver = RecordingReceiver()
        link.start(receiver: receiver)
        var config = FaultConfig()
        config.dropPercent = 100
        config.direction = .tx
        try link.setFaults(config)
        #expect(link.send(testFrame(1)) == .dropped(.fault))
        #expect(wire.sent.isEmpty)
        #expect(wire.inject(testFrame(2)))                      // rx untouched
        #expect(eventually { receiver.frames.count == 1 })

        config = FaultConfig()
        config.reorderPercent = 100
        config.direction = .tx
        try link.setFaults(config)
        _ = link.send(testFrame(10))                            // held back
        #expect(wire.sent.isEmpty)
        config.reorderPercent = 0
        config.duplicatePercent = 100
        try link.setFaults(nil)                                 // out again: the held frame is lost
        #expect(link.faultFilter == nil)
        #expect(link.send(testFrame(11)) == .sent)
        #expect(wire.sent.map(\.bytes) == [testFrame(11)])
        #expect(wire.inject(testFrame(12)))
        #expect(eventually { receiver.frames.count == 2 })
    }

    /// QMP swaps the backend while the fault filter delays a frame: the old filter goes
    /// with the old backend, and its timer does not send to the stopped one later.
    @Test func swapTakesTheOldFilterWithTheOldBackend() throws {
        let running = try RunningLoop()
        let clock = VirtualClock()
        let old = InMemoryEndpoint()
        let fresh = InMemoryEndpoint()
        let link = LinkControl(wrapping: old, deviceLock: DeviceLock(), loop: running.loop, clock: clock,
                               makeBackend: { _ in fresh })
        link.start(receiver: RecordingReceiver())
        var config = FaultConfig()
        config.delay = 5_000_000                                // ns
        config.direction = .tx
        try link.setFaults(config)
        #expect(link.send(testFrame(1)) == .sent)               // held on the clock
        try link.swap(options: DeviceOptions(device: "e1000"))
        clock.advance(by: 10_000_000)
        usleep(50_000)
        #expect(old.sent.isEmpty && fresh.sent.isEmpty)         // lost with the old wire, as on a cable swap
        #expect(link.send(testFrame(2)) == .sent)               // the new filter delays as configured
        clock.advance(by: 5_000_000)
        #expect(eventually { fresh.sent.map(\.bytes) == [testFrame(2)] })
        #expect(old.sent.isEmpty)
    }

    /// Every frame picked is overtaken by the next: at 100 % each pair goes out swapped, in
    /// both directions (the held frame used to go out first when the next was picked too).
    @Test func reorderSwapsEveryPairAtFullRate() throws {
        let (filter, wire, receiver, running) = try makeFilter("fault-reorder=100,fault-seed=3")
        for i in 0 ..< 8 { _ = filter.send(testFrame(i)) }
        #expect(wire.sent.map { Int($0.bytes[14]) } == [1, 0, 3, 2, 5, 4, 7, 6])
        for i in 0 ..< 8 { running.loop.execute { wire.inject(testFrame(i)) } }
        #expect(eventually { receiver.frames.count == 8 })
        #expect(receiver.frames.map { Int($0.bytes[14]) } == [1, 0, 3, 2, 5, 4, 7, 6])
        #expect(filter.statistics.reordered.load(ordering: .relaxed) == 8)
    }

    /// A frame whose checksum the other side completes or trusts (NEEDS_CSUM, GSO,
    /// DATA_VALID) is completed first and its header cleared, so the flipped byte is
    /// caught by a checksum, as netem does (`skb_checksum_help`, `netem_segment`).
    @Test func corruptionStaysDetectableWithOffloads() throws {
        let (filter, wire, receiver, running) = try makeFilter("fault-corrupt=100,fault-seed=5")
        let builder = FrameBuilder()
        let payload = (0 ..< 3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let partial = builder.tcp(payload: Array(payload[0 ..< 1000]), id: 1, checksum: .partial)
        let csum = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16)
        let gso = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue,
                                  headerLength: 54, gsoSize: 1000, checksumStart: 34, checksumOffset: 16)
        /// Caught by a checksum, or the byte hit the Ethernet header (which none covers).
        func caught(_ frame: [UInt8], original: [UInt8]?) -> Bool {
            let v = ChecksumOffload.verify(frame)
            if v.ipv4Header == .bad || v.transport == .bad { return true }
            guard let original, original.count == frame.count else { return false }
            return zip(frame, original).enumerated().allSatisfy { i, p in p.0 == p.1 || i < 14 }
        }
        for _ in 0 ..< 20 { _ = filter.send(partial, header: csum) }
        #expect(wire.sent.count == 20)
        let complete = builder.tcp(payload: Array(payload[0 ..< 1000]), id: 1)
        #expect(wire.sent.allSatisfy { ($0.header?.flags ?? 0) & VirtioNetHeader.needsChecksum == 0 && caught($0.bytes, original: complete) })
        // A 3000-byte TSO send: three segments, one of them hit.
        let big = builder.tcp(payload: payload, id: 1, checksum: .partial)
        _ = filter.send(big, header: gso)
        let segments = Array(wire.sent.dropFirst(20))
        #expect(segments.count == 3 && segments.allSatisfy { $0.bytes.count == 54 + 1000 && $0.header?.isGSO != true })
        #expect(segments.filter { caught($0.bytes, original: nil) }.count == 1)
        // Received with DATA_VALID: the flag is cleared, so the guest checks the sum.
        let valid = VirtioNetHeader(flags: VirtioNetHeader.dataValid)
        for _ in 0 ..< 20 { running.loop.execute { wire.inject(complete, header: valid) } }
        #expect(eventually { receiver.frames.count == 20 })
        #expect(receiver.frames.allSatisfy { ($0.header?.flags ?? 0) & VirtioNetHeader.dataValid == 0 && caught($0.bytes, original: complete) })
    }

    /// `serve` stopping takes the filter out (`detach`, on the main thread) while the loop
    /// hands the device a held frame: the held list is empty when the delivery returns.
    /// Removing "the first" then trapped the process.
    @Test func detachDuringADeliveryOfAHeldFrame() throws {
        var o = try DeviceSpec.parse("e1000,fault-dup=100,fault-dir=rx").options
        let config = try #require(try NetBackendConfig.take(from: &o).faults)
        let running = try RunningLoop()
        let wire = InMemoryEndpoint()
        let filter = FaultFilter(wrapping: wire, config: config, eventLoop: running.loop, clock: running.loop)
        let count = Mutex(0)
        let receiver = RecordingReceiver { _ in
            // The second frame is the duplicate, delivered from the held list.
            if count.withLock({ $0 += 1; return $0 }) == 2 { filter.detach() }
        }
        filter.start(receiver: receiver)
        running.loop.execute { wire.inject(testFrame(1)) }
        #expect(eventually { receiver.frames.count == 2 })
        running.loop.execute { _ = wire.inject(testFrame(2)) }   // the loop is still alive
        #expect(eventually { count.withLock { $0 } >= 2 })
    }

    @Test func reorderLetsTheNextFrameOvertake() throws {
        let (filter, wire, _, running) = try makeFilter("fault-reorder=50,fault-seed=3,fault-dir=tx")
        for i in 0 ..< 200 { _ = filter.send(testFrame(i)) }
        #expect(eventually { wire.sent.count == 200 })          // nothing lost: the window flushes the last
        let order = wire.sent.map { Int($0.bytes[14]) }
        #expect(order != Array(0 ..< 200) && order.sorted() == Array(0 ..< 200))
        #expect(filter.statistics.reordered.load(ordering: .relaxed) > 50)
        _ = running
    }
}
