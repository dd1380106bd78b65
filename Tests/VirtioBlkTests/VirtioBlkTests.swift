import Testing
import VMMBlock
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioBlk

@Suite("virtio-blk") struct VirtioBlkTests {
    typealias D = VirtioBlkDriver

    /// vp_modern_probe and virtblk_probe: the modern ID, the storage class, the features
    /// Linux 6.1 accepts, and a config space it reads without tripping virtblk_probe's checks.
    @Test func identityFeaturesAndConfig() throws {
        let d = try D(options: "serial=disk-one")
        #expect(d.blk.configRead(0x00) == 0x1042_1AF4)
        #expect(d.blk.configRead(0x08) >> 8 == 0x01_00_00)
        let f = d.deviceFeatures
        for bit in [2, 6, 9, 10, 11, 13, 14, 32] { #expect(f & (1 << UInt64(bit)) != 0, "feature bit \(bit)") }
        for bit in [1, 5, 12, 16] { #expect(f & (1 << UInt64(bit)) == 0, "feature bit \(bit) must not be offered") }
        #expect(d.config(0, 4) | d.config(4, 4) << 32 == (1 << 20) / 512)   // capacity, read as Linux does: two halves
        #expect(d.config(12, 4) == 254)                  // seg_max = queue size − 2
        #expect(d.config(20, 4) == 512)                  // blk_size
        #expect(d.config(32, 1) == 1)                    // writeback
        #expect(d.config(36, 4) == 1 << 21 && d.config(40, 4) == 1) // max_discard_sectors, max_discard_seg
        #expect(d.config(56, 1) == 1)                    // write_zeroes_may_unmap
        #expect(d.config(60, 4) == 0)                    // beyond the structure
    }

    @Test func writeThenReadBack() throws {
        let d = try D()
        d.bringUp()
        let pattern = (0 ..< 4096).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        let w = d.submit(type: D.T.write, sector: 8, write: pattern)
        d.complete()
        #expect(d.status(at: w.status) == D.S.ok)
        #expect(Array(d.disk.contents[4096 ..< 8192]) == pattern)
        let r = d.submit(type: D.T.read, sector: 8, readLength: 4096)
        d.complete()
        #expect(d.status(at: r.status) == D.S.ok)
        #expect(d.bytes(at: r.data, 4096) == pattern)
        let used = d.queues[0]?.takeUsed() ?? []
        #expect(used.map(\.length) == [1, 4097])         // data written + the status byte
        #expect(d.msiVectors.contains(1))
    }

    /// The spec leaves these to the device; QEMU's answers (virtio_blk_sect_range_ok,
    /// the default case) are what drivers expect, and none of them may trap.
    @Test func badRequestsGetTheSpecStatus() throws {
        let d = try D()
        d.bringUp()
        let cases: [(UInt32, UInt64, Int, UInt8)] = [
            (D.T.read, 2048, 512, D.S.ioError),           // one sector past the end
            (D.T.read, UInt64.max / 256, 512, D.S.ioError), // sector × 512 overflows
            (D.T.read, 0, 100, D.S.ioError),              // not a multiple of the block size
            (77, 0, 512, D.S.unsupported),                // unknown type
            (D.T.getID, 0, 8, D.S.ioError),               // GET_ID needs 20 bytes
        ]
        for (type, sector, length, expected) in cases {
            let r = d.submit(type: type, sector: sector, readLength: length)
            d.complete()
            #expect(d.status(at: r.status) == expected, "type \(type) sector \(sector) length \(length)")
        }
        #expect(d.device?.badRequests == UInt64(cases.count))
    }

    @Test func readOnlyDiskRefusesWritesAndWritesNothing() throws {
        let d = try D(options: "readonly=on")
        #expect(d.deviceFeatures & (1 << 5) != 0)
        #expect(d.deviceFeatures & (1 << 13) == 0)       // no discard on a read-only disk
        d.bringUp()
        let w = d.submit(type: D.T.write, sector: 0, write: [UInt8](repeating: 0xAB, count: 512))
        d.complete()
        #expect(d.status(at: w.status) == D.S.ioError)
        #expect(d.device.map { $0.backend.counters.writes.load(ordering: .relaxed) } == 0)
    }

    @Test func getIDIsNulPaddedSerial() throws {
        let d = try D(options: "serial=vol-7")
        d.bringUp()
        let r = d.submit(type: D.T.getID, readLength: 20)
        d.complete()
        #expect(d.status(at: r.status) == D.S.ok)
        #expect(d.bytes(at: r.data, 20) == Array("vol-7".utf8) + [UInt8](repeating: 0, count: 15))
        #expect(throws: OptionError.self) { _ = try D(options: "serial=this-serial-is-too-long-for-it") }
        // Split over three descriptors, as §2.7.4 allows (QEMU answers it too).
        let h = d.buffer(D.header(type: D.T.getID)), a = d.buffer(zeroed: 3), b = d.buffer(zeroed: 9), c = d.buffer(zeroed: 8)
        let status = d.buffer([0xEE])
        d.queues[0]?.addChain([(h, 16, false), (a, 3, true), (b, 9, true), (c, 8, true), (status, 1, true)])
        d.kick(0)
        d.complete()
        #expect(d.status(at: status) == D.S.ok)
        #expect(d.bytes(at: a, 3) + d.bytes(at: b, 9) + d.bytes(at: c, 8) == Array("vol-7".utf8) + [UInt8](repeating: 0, count: 15))
    }

    /// §2.7.4 Message Framing: no assumption about how header, data and status are split.
    @Test func anyFramingWorks() throws {
        let d = try D()
        d.bringUp()
        d.disk.write([1, 2, 3, 4], at: 512)
        // Header split 5 + 11 bytes; data and status in one writable descriptor.
        let h = D.header(type: D.T.read, sector: 1)
        let a = d.buffer(Array(h[0 ..< 5])), b = d.buffer(Array(h[5...]))
        let dataAndStatus = d.buffer(zeroed: 513)
        d.queues[0]?.addChain([(a, 5, false), (b, 11, false), (dataAndStatus, 513, true)])
        d.kick(0)
        d.complete()
        let out = d.bytes(at: dataAndStatus, 513)
        #expect(Array(out[0 ..< 4]) == [1, 2, 3, 4])
        #expect(out[512] == D.S.ok)
    }

    @Test func chainWithoutStatusByteGoesBackUnused() throws {
        let d = try D()
        d.bringUp()
        d.queues[0]?.addChain([(d.buffer(D.header(type: D.T.read)), 16, false)])
        d.kick(0)
        d.complete()
        #expect(d.queues[0]?.takeUsed().map(\.length) == [0])
        #expect(d.device?.badRequests == 1)
        #expect(d.transport?.status.contains(.needsReset) == false)
    }

    @Test func discardAndWriteZeroes() throws {
        let d = try D()
        d.bringUp()
        d.disk.write([UInt8](repeating: 0x55, count: 2048), at: 0)
        var r = d.submit(type: D.T.discard, write: D.range(sector: 0, count: 1, flags: 1))   // UNMAP on a discard
        d.complete()
        #expect(d.status(at: r.status) == D.S.unsupported)
        r = d.submit(type: D.T.discard, write: D.range(sector: 0, count: 1, flags: 4))       // reserved flag
        d.complete()
        #expect(d.status(at: r.status) == D.S.unsupported)
        r = d.submit(type: D.T.writeZeroes, write: D.range(sector: 0, count: 1) + D.range(sector: 2, count: 1)) // two segments
        d.complete()
        #expect(d.status(at: r.status) == D.S.unsupported)
        r = d.submit(type: D.T.writeZeroes, write: D.range(sector: 1, count: 2, flags: 1))
        d.complete()
        #expect(d.status(at: r.status) == D.S.ok)
        #expect(d.disk.contents[0 ..< 512].allSatisfy { $0 == 0x55 })
        #expect(d.disk.contents[512 ..< 1536].allSatisfy { $0 == 0 })
        r = d.submit(type: D.T.discard, write: D.range(sector: 2047, count: 2))              // past the end
        d.complete()
        #expect(d.status(at: r.status) == D.S.ioError)
    }

    /// Requests finish out of order in the backend but return in order (the packed ring
    /// needs it); a full backend queue pushes back and resumes after a completion.
    @Test func orderingAndBackPressure() throws {
        let disk = InMemoryDisk(size: 1 << 20, geometry: BlockGeometry(size: 1 << 20, queueLimit: 2))
        let d = try D(disk: disk)
        d.bringUp()
        disk.hold()
        let statuses = (0 ..< 4).map { d.submit(type: D.T.read, sector: UInt64($0), readLength: 512).status }
        d.complete()
        #expect(disk.queued == 2)                         // two accepted, two wait in the ring
        #expect(d.queues[0]?.takeUsed().isEmpty == true)
        disk.release()
        d.complete()
        #expect(statuses.allSatisfy { d.status(at: $0) == D.S.ok })
        #expect(d.queues[0]?.takeUsed().map(\.id) == [0, 3, 6, 9])
        #expect(disk.counters.queueFull.load(ordering: .relaxed) >= 1)
    }

    @Test func backendErrorsReachTheGuest() throws {
        let d = try D()
        d.bringUp()
        d.disk.failNext(with: .ioError(errno: 5))
        var r = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        #expect(d.status(at: r.status) == D.S.ioError)
        d.disk.failNext(with: .unsupported)
        r = d.submit(type: D.T.flush)
        d.complete()
        #expect(d.status(at: r.status) == D.S.unsupported)
    }

    /// virtblk_config_changed_work re-reads capacity on the config interrupt.
    @Test func resizeRaisesAConfigChange() throws {
        let d = try D()
        d.bringUp()
        let generation = d.configGeneration
        try d.disk.resize(to: 2 << 20)
        d.complete()                                       // the backend tells the device on the I/O loop
        #expect(d.config(0, 4) == (2 << 20) / 512)
        #expect(d.configGeneration != generation)
        #expect(d.msiVectors.last == 0)
    }

    /// A request the device accepted may reach the disk after the disk shrank under it
    /// (FuzzVirtioBlk found the test disk copying past its end): a read gets zeroes past
    /// the new end, as pread past a file's end does, and a write fails.
    @Test func requestsHeldAcrossAShrinkStayInsideTheDisk() throws {
        let d = try D()
        d.bringUp()
        d.disk.write([UInt8](repeating: 0x77, count: 1 << 20), at: 0)
        d.disk.hold()
        let read = d.submit(type: D.T.read, sector: 1023, readLength: 1024)   // straddles the new end
        let write = d.submit(type: D.T.write, sector: 2040, write: [UInt8](repeating: 9, count: 512))
        d.complete()
        try d.disk.resize(to: 512 << 10)
        d.disk.release()
        d.complete()
        #expect(d.status(at: read.status) == D.S.ok)
        #expect(d.bytes(at: read.data, 1024) == [UInt8](repeating: 0x77, count: 512) + [UInt8](repeating: 0, count: 512))
        #expect(d.status(at: write.status) == D.S.ioError)
        #expect(d.disk.contents.count == 512 << 10)
    }

    /// One write in write-through mode: it succeeds, and the device flushed it before
    /// completing it.
    private func expectWriteIsFlushed(_ d: D, sourceLocation: SourceLocation = #_sourceLocation) {
        let w = d.submit(type: D.T.write, write: [UInt8](repeating: 7, count: 512))
        d.complete()
        #expect(d.status(at: w.status) == D.S.ok, sourceLocation: sourceLocation)
        #expect(d.disk.counters.flushes.load(ordering: .relaxed) == 1, sourceLocation: sourceLocation)
    }

    /// cache_type_store: "write through" writes 0 to writeback; every write is then flushed
    /// before it completes.
    @Test func writeThroughFlushesEveryWrite() throws {
        let d = try D()
        d.bringUp()
        d.writeConfig(32, 1, 0)
        #expect(d.config(32, 1) == 0)
        expectWriteIsFlushed(d)
        d.setStatus(0)                                     // reset restores the configured cache
        #expect(d.config(32, 1) == 1)
    }

    /// In write-through mode a write's flush may find the backend full: other completions
    /// ran first and new requests took the room. The write succeeded, so it must not be
    /// answered IOERR (a Linux filesystem then aborts its journal); its flush waits for
    /// the next room.
    @Test func aWriteThroughFlushThatFindsTheBackendFullWaitsForRoom() throws {
        let d = try D()
        d.bringUp()
        d.writeConfig(32, 1, 0)                              // write-through
        d.disk.hold()
        let write = d.submit(type: D.T.write, write: [UInt8](repeating: 3, count: 512))
        let read = d.submit(type: D.T.read, sector: 8, readLength: 512)   // still in the backend when the flush is refused
        d.complete()
        d.disk.refuseNext(1)
        d.disk.release()
        d.complete()
        #expect(d.status(at: write.status) == D.S.ok)
        #expect(d.status(at: read.status) == D.S.ok)
        #expect(d.disk.counters.flushes.load(ordering: .relaxed) == 1)
    }

    /// A driver that does not take VIRTIO_BLK_F_FLUSH treats the cache as write-through
    /// (virtblk_get_cache_mode), so the device must make each write durable itself.
    @Test func aDriverWithoutFlushGetsWriteThrough() throws {
        let d = try D()
        d.bringUp { $0 & ~(1 << 9) }
        #expect(d.config(32, 1) == 0)
        expectWriteIsFlushed(d)
    }

    /// Without CONFIG_WCE the writeback field is read-only (§5.2.5): a driver without FLUSH
    /// cannot write write-back into it and leave its writes unflushed.
    @Test func writebackIsReadOnlyWithoutConfigWCE() throws {
        let d = try D()
        d.bringUp { $0 & ~(1 << 9) & ~(1 << 11) }           // neither FLUSH nor CONFIG_WCE
        d.writeConfig(32, 1, 1)
        #expect(d.config(32, 1) == 0)
        expectWriteIsFlushed(d)
        // CONFIG_WCE without FLUSH: write-back would be a cache the driver cannot flush.
        let e = try D()
        e.bringUp { $0 & ~(1 << 9) }
        e.writeConfig(32, 1, 1)
        #expect(e.config(32, 1) == 0)
        expectWriteIsFlushed(e)
    }

    /// After a ring error the queue is gone until the driver resets: requests that finish
    /// then give back the guest memory they held (or a vfio-user client's unmapped pages
    /// would stay retired), and with bus mastering off nothing is written to the guest.
    @Test func finishedRequestsNeitherWriteWithoutBusMasteringNorHoldMemoryAfterARingError() throws {
        let d = try D()
        d.bringUp()
        d.disk.hold()
        let r = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        #expect(d.machine.memory.lentOut.load(ordering: .relaxed) > 0)
        let command = d.function.configRead(4, size: 2)
        d.function.configWrite(4, size: 2, value: command & ~4)          // bus mastering off
        d.disk.release()
        d.complete()
        #expect(d.status(at: r.status) == 0xEE)
        #expect(d.queues[0]?.takeUsed().isEmpty == true)
        d.function.configWrite(4, size: 2, value: command)               // back on: the next kick returns it
        d.kick(0)
        d.complete()
        #expect(d.status(at: r.status) == D.S.ok)

        d.disk.hold()
        _ = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        d.transport?.fail(nil, .usedRingOverflow)
        d.disk.release()
        d.complete()
        #expect(d.machine.memory.lentOut.load(ordering: .relaxed) == 0)
    }

    /// A reset forgets the requests in flight, and a driver's reset waits for those the
    /// backend still holds: the status reads back non-zero (the driver polls for 0 before
    /// it frees or reuses its buffers, as Linux's vp_reset does) and a new bring-up is
    /// refused until they are back.
    @Test func resetForgetsRequestsInFlightAndWaitsForTheBackend() throws {
        let d = try D()
        d.bringUp()
        d.disk.hold()
        let r = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        d.setStatus(0)
        #expect(d.status != 0)
        d.setStatus(1)                                       // too early: ignored
        #expect(d.status != 0 && d.status != 1)
        d.disk.release()
        d.complete()
        #expect(d.status == 0)
        #expect(d.status(at: r.status) == 0xEE)          // never written: the request belonged to the old driver
        d.bringUp()
        let next = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        #expect(d.status(at: next.status) == D.S.ok)
    }

    /// The old driver's requests fill the backend's queue, the device is reset by the
    /// machine (a vfio-user DEVICE_RESET, which does not wait for them), and a new driver
    /// starts without a reset of its own (the status already reads 0), so nothing makes
    /// it wait: its first request is refused for want of room. When the old requests
    /// leave the backend, that room must reach it: its request is answered.
    @Test func resetWithTheBackendFullDoesNotStallTheNewDriver() throws {
        let disk = InMemoryDisk(size: 1 << 20, geometry: BlockGeometry(size: 1 << 20, queueLimit: 2))
        let d = try D(disk: disk)
        d.bringUp()
        disk.hold()
        _ = (0 ..< 2).map { d.submit(type: D.T.read, sector: UInt64($0), readLength: 512) }
        d.complete()
        #expect(disk.queued == 2)
        d.transport?.reset()
        d.bringUp(resetting: false)
        let fresh = d.submit(type: D.T.read, sector: 4, readLength: 512)
        d.complete()
        #expect(d.status(at: fresh.status) == 0xEE)          // waiting for the backend
        disk.release()
        d.complete()
        #expect(d.status(at: fresh.status) == D.S.ok)
    }

    /// One request may move at most QEMU's BDRV_REQUEST_MAX_BYTES, however often its
    /// descriptors name the same buffer.
    @Test func aRequestLongerThanTheCapIsRefused() {
        let limits = VirtioBlkLimits(capacityBytes: 1 << 40, logicalBlockSize: 512, readOnly: false, canDiscard: false,
                                     canWriteZeroes: false, maxDiscardSectors: 0, maxWriteZeroesSectors: 0)
        #expect(VirtioBlkRequestParser.checkedRange(sector: 0, length: VirtioBlkRequestParser.maxRequestBytes, limits: limits) == 0)
        #expect(VirtioBlkRequestParser.checkedRange(sector: 0, length: VirtioBlkRequestParser.maxRequestBytes + 512, limits: limits) == nil)
    }

    @Test func multiQueue() throws {
        let d = try D(options: "num-queues=4")
        #expect(d.deviceFeatures & (1 << 12) != 0)
        #expect(d.config(34, 2) == 4)
        d.bringUp(queueCount: 4)
        let r = d.submit(type: D.T.read, readLength: 512, queue: 3)
        d.complete()
        #expect(d.status(at: r.status) == D.S.ok)
        #expect(d.queues[3]?.takeUsed().count == 1)
    }

    @Test func packedRing() throws {
        let d = try D(options: "packed=on")
        let qs = d.bringUpPacked(queueCount: 1)
        let h = d.buffer(D.header(type: D.T.getID)), data = d.buffer(zeroed: 20), status = d.buffer([0xEE])
        qs[0].addChain([(h, 16, false), (data, 20, true), (status, 1, true)])
        d.kick(0)
        d.complete()
        #expect(d.status(at: status) == D.S.ok)
        #expect(qs[0].takeUsed().map(\.length) == [21])
    }

    @Test func badOptionsAreNamed() throws {
        for (opts, key) in [("queue-size=100", "queue-size"), ("num-queues=0", "num-queues"), ("cache=sometimes", "cache")] {
            #expect(throws: OptionError.self) { _ = try D(options: opts) }
            do { _ = try D(options: opts) } catch let e as OptionError { #expect(e.description.contains(key)) }
        }
    }
}

extension VirtioBlkTests {
    /// Linux kicks only when avail->idx passes avail_event (VIRTIO_RING_F_EVENT_IDX,
    /// virtqueue_kick_prepare): the device must keep it current, or the driver's second
    /// request never reaches it (found by Linux's virtio_blk in the vfio-user tier).
    @Test func availEventFollowsTheRing() throws {
        let d = try D()
        d.bringUp()
        for i in 0 ..< 3 {
            d.submit(type: D.T.read, sector: UInt64(i), readLength: 512)
            d.complete()
            #expect(d.queues[0]?.availEvent == d.queues[0]?.availIdx)
        }
        // A full queue: the requests in flight fill the ring; after they finish, the
        // device takes what the driver added meanwhile without a new kick.
        d.disk.hold()
        for i in 0 ..< 4 { d.submit(type: D.T.read, sector: UInt64(i), readLength: 512, kick: i == 0) }
        d.complete()
        d.disk.release()
        d.complete()
        #expect(d.queues[0]?.takeUsed().count == 7)
    }
}

@Suite struct VirtioBlkBudgetTests {
    typealias D = VirtioBlkDriver

    /// 200 flushes (400 descriptors, in a 512-entry queue) behind one kick: the kick
    /// takes what fits the per-action budget, the rest continues from the I/O loop, and
    /// every request completes.
    @Test func aKickPastTheBudgetContinuesFromTheLoop() throws {
        let d = try D(options: "queue-size=512")
        d.bringUp()
        let statuses = (0 ..< 200).map { _ in d.submit(type: D.T.flush, kick: false).status }
        let meter = d.blk.function.cost
        meter.resetWorst()
        d.kick(0)
        let taken = d.device?.inFlight[0].count ?? 0
        #expect(taken > 0 && taken < 200, "one kick took \(taken) requests")
        var turns = 0
        while d.machine.loop.runQueuedWork() > 0 && turns < 100 { turns += 1 }
        #expect(statuses.allSatisfy { d.status(at: $0) == D.S.ok })
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }

    /// 127 flushes, then a read through a 1,024-entry indirect table, behind one kick: the
    /// budget is checked before each chain, so the read's chain is walked whole past it.
    /// A chain is at most 1,024 descriptors, so the kick costs at most that past the
    /// budget; before the cap it could be a queue's worth and a table more.
    @Test func aChainCostsAtMostItsLengthPastTheBudget() throws {
        let d = try D(options: "queue-size=512")
        d.bringUp()
        let flushes = (0 ..< 127).map { _ in d.submit(type: D.T.flush, kick: false).status }
        let data = d.buffer(zeroed: 1024)
        let status = d.buffer([0xEE])
        // Two sectors over the rest of the table: its first piece the bytes the others leave.
        let pieces = 1024 - 2, first = 1024 - (pieces - 1)
        let chain = [(d.buffer(D.header(type: D.T.read)), UInt32(16), false), (data, UInt32(first), true)]
            + (1 ..< pieces).map { i in (GuestAddress(data.raw + UInt64(first + i - 1)), UInt32(1), true) }
            + [(status, UInt32(1), true)]
        d.queues[0]?.addIndirect(chain, allocator: d.machine.allocator)
        let meter = d.blk.function.cost
        meter.resetWorst()
        d.kick(0)
        var turns = 0
        while d.machine.loop.runQueuedWork() > 0 && turns < 100 { turns += 1 }
        #expect(meter.worst.descriptors <= ActionCostMeter.deferAt.descriptors + 1024, "worst action: \(meter.worst)")
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
        #expect(flushes.allSatisfy { d.status(at: $0) == D.S.ok })
        #expect(d.status(at: status) == D.S.ok)
    }
}
