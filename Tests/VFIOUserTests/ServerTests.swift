#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Testing
@testable import VFIOUser
import VMMCore

/// A served probe device on a socket in a temporary directory, with a connected client.
final class Served {
    let loop: EPollEventLoop
    let device: ServedDevice
    let server: VFIOUserServer
    let path: String
    let probe: ProbeDevice

    init(dmaBudget: DMAByteBudget = .process) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("vfu-\(UUID().uuidString.prefix(8)).sock").path
        loop = try EPollEventLoop()
        device = try ServedDevice(spec: try DeviceSpec.parse("probe"), registry: PCIDeviceRegistry([ProbeDevice.self]),
                                  services: ServiceRegistry(), loop: loop, logger: Logger(label: "test"), dmaBudget: dmaBudget)
        probe = device.function.device as! ProbeDevice
        server = try VFIOUserServer(device: device, listener: try UnixSocketListener(path: path), logger: Logger(label: "test"))
        server.start()
    }

    func client(negotiate: Bool = true) throws -> TestClient {
        let c = try TestClient(path: path)
        if negotiate { #expect(try c.version().isError == false) }
        return c
    }

    deinit {
        server.stop()
        device.shutdown()
    }
}

@Suite struct ServerTests {
    @Test func versionNegotiationAnswersTheClientsMinorAndCapabilities() throws {
        let s = try Served()
        let c = try s.client(negotiate: false)
        let r = try c.version()
        #expect(!r.isError)
        #expect(r.header.flags.rawValue & 0xF == 1) // a reply
        #expect(r.payload[0] == 0 && r.payload[1] == 0 && r.payload[2] == 0 && r.payload[3] == 0) // 0.0 for QEMU's 0.0
        let json = String(decoding: r.payload.dropFirst(4).prefix { $0 != 0 }, as: UTF8.self)
        #expect(json.contains("\"max_msg_fds\":16"))
        #expect(r.payload.last == 0)
    }

    /// Where the spec, libvfio-user or the kernel's VFIO is stricter than this server was: a
    /// second VERSION, a major version it does not speak (the connection ends after the
    /// reply), a DMA_UNMAP that cuts a mapping (refused, nothing removed; one over several
    /// whole mappings removes them all, which QEMU relies on), payloads longer than their
    /// counts, and a count-0 SET_IRQS teardown that does not start at 0.
    @Test func protocolEdgesAreAnsweredAsTheSpecSays() throws {
        let s = try Served()
        let c = try s.client()
        #expect(try c.version().isError)                                  // negotiated once
        let mem = sealedMemfd(size: 0x4000)
        defer { close(mem) }
        #expect(try c.dmaMap(address: 0, size: 0x2000, fd: mem).isError == false)
        #expect(try c.dmaMap(address: 0x2000, size: 0x2000, offset: 0x2000, fd: mem).isError == false)
        let partial = try c.dmaUnmap(address: 0, size: 0x3000)            // one region and half of another
        #expect(partial.isError && partial.header.error == UInt32(EINVAL))
        #expect(s.device.memory.regions.count == 2)
        #expect(try c.dmaUnmap(address: 0x1000, size: 0x4000).isError)   // cuts the first
        #expect(try c.dmaUnmap(address: 0, size: 0x4000).isError == false) // both whole: both go
        #expect(s.device.memory.regions.isEmpty)
        let none = try c.dmaUnmap(address: 0, size: 0x4000)
        #expect(none.isError && none.header.error == UInt32(ENOENT))
        #expect(try c.dmaMap(address: 0x10_0000, size: 0x1000, fd: nil).isError == false)   // no descriptor: remembered only
        // The same mapping again is the one there, as libvfio-user's dma_controller_add_region
        // answers it (it was appended again, and took two unmaps); otherwise no overlaps,
        // with a descriptor or without.
        #expect(try c.dmaMap(address: 0x10_0000, size: 0x1000, fd: nil).isError == false)
        #expect(try c.dmaMap(address: 0xF_F000, size: 0x2000, fd: nil).isError)
        let otherFile = try c.dmaMap(address: 0x10_0000, size: 0x1000, fd: mem)
        #expect(otherFile.isError && otherFile.header.error == UInt32(EINVAL))
        #expect(s.device.memory.regions.isEmpty)
        #expect(try c.dmaUnmap(address: 0x10_0000, size: 0x1000).isError == false)
        let gone = try c.dmaUnmap(address: 0x10_0000, size: 0x1000)
        #expect(gone.isError && gone.header.error == UInt32(ENOENT))
        #expect(try c.call(.regionWrite, le64(0) + le32(7) + le32(2) + [0, 0, 0xFF]).isError)   // 3 bytes for count 2
        #expect(try c.call(.deviceSetIRQs, le32(22) + le32(0x2 | 0x20) + le32(0) + le32(0) + le32(1) + [1, 1]).isError)
        #expect(try c.setIRQs(flags: 0x1 | 0x20, index: 2, start: 1, count: 0).isError)
        #expect(try c.setIRQs(flags: 0x1 | 0x20, index: 2, start: 0, count: 0).isError == false)
        #expect(try c.regionRead(7, 0, 2).u32(16) & 0xFFFF == 0x1234)    // still serving
    }

    @Test func aMajorVersionThisServerDoesNotSpeakEndsTheConnection() throws {
        let s = try Served()
        let c = try s.client(negotiate: false)
        let r = try c.call(.version, le16(1) + le16(0) + Array("{}".utf8) + [0])
        #expect(r.isError && r.header.error == UInt32(ENOTSUP))
        var byte: UInt8 = 0
        #expect(read(c.fd, &byte, 1) == 0)                                 // closed (not the 5 s timeout: -1)
    }

    @Test func commandsBeforeVersionAreRefused() throws {
        let s = try Served()
        let c = try s.client(negotiate: false)
        let r = try c.call(.deviceGetInfo, le32(16))
        #expect(r.isError && r.header.error == UInt32(EINVAL))
    }

    @Test func deviceRegionsAndIRQsAreDescribed() throws {
        let s = try Served()
        let c = try s.client()
        let info = try c.call(.deviceGetInfo, le32(16) + le32(0) + le32(0) + le32(0))
        #expect(info.u32(4) == 3 && info.u32(8) == 9 && info.u32(12) == 5) // RESET|PCI, 9 regions, 5 IRQ indices
        func region(_ i: UInt32) throws -> (flags: UInt32, size: UInt64) {
            let r = try c.call(.deviceGetRegionInfo, le32(32) + le32(0) + le32(i) + le32(0) + le64(0) + le64(0))
            #expect(!r.isError)
            return (r.u32(4), r.u64(16))
        }
        #expect(try region(0) == (3, 0x1000))
        #expect(try region(1).size == 0)
        #expect(try region(2) == (3, 0x4000))
        #expect(try region(3).size == 0) // upper half of the 64-bit BAR
        #expect(try region(6).size == 0) // no ROM
        #expect(try region(7) == (3, 256))
        let bad = try c.call(.deviceGetRegionInfo, le32(32) + le32(0) + le32(9) + le32(0) + le64(0) + le64(0))
        #expect(bad.isError)
        func irqCount(_ i: UInt32) throws -> UInt32 { try c.call(.deviceGetIRQInfo, le32(16) + le32(0) + le32(i) + le32(0)).u32(12) }
        #expect(try irqCount(0) == 1 && irqCount(1) == 0 && irqCount(2) == 4)
    }

    @Test func configSpaceReadsAndWritesReachTheCore() throws {
        let s = try Served()
        let c = try s.client()
        let ids = try c.regionRead(7, 0, 4)
        #expect(ids.u32(16) == 0x5678_1234)
        let whole = try c.regionRead(7, 0, 256) // QEMU reads config space whole at realize
        #expect(whole.payload.count == 16 + 256)
        _ = try c.regionWrite(7, 4, le16(0x6))          // memory space + bus master
        #expect(try c.regionRead(7, 4, 2).u32(16) & 0xFFFF == 0x6)
        #expect(try c.regionRead(7, 250, 8).isError)     // past the end
        #expect(try c.regionRead(8, 0, 4).isError)       // VGA: not implemented
    }

    @Test func intxMasksItselfAndFiresAgainOnUnmaskWhileHigh() throws {
        let s = try Served()
        let c = try s.client()
        let efd = makeEventFD()
        defer { close(efd) }
        #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 0, start: 0, count: 1, fds: [efd]).isError == false)
        _ = try c.regionWrite(0, 0, le32(1))             // line high
        #expect(drain(efd) == 1)
        _ = try c.regionWrite(0, 0, le32(1))             // still high, masked: nothing
        #expect(drain(efd, within: 0.05) == 0)
        _ = try c.setIRQs(flags: 0x1 | 0x10, index: 0, start: 0, count: 1) // unmask while high: fires again
        #expect(drain(efd) == 1)
        _ = try c.regionWrite(0, 0, le32(0))             // low
        _ = try c.setIRQs(flags: 0x1 | 0x10, index: 0, start: 0, count: 1)
        #expect(drain(efd, within: 0.05) == 0)
    }

    /// The client shares each eventfd's open file with the server: it can make it
    /// blocking again and fill its counter, so that the server's next signal cannot be
    /// written. That write waits on the server's signalling thread alone: the client's
    /// messages are still answered, and once it leaves the next client's interrupts arrive.
    @Test func aClientThatBlocksItsEventfdStallsNothingElse() throws {
        let s = try Served()
        do {
            let c = try s.client()
            let efd = makeEventFD()
            defer { close(efd) }
            #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 0, start: 0, count: 1, fds: [efd]).isError == false)
            #expect(makeBlocking(efd))                                 // blocking, for the server too
            _ = try c.regionWrite(0, 0, le32(1))                       // INTx high: a signal that cannot be written
            usleep(50_000)
            #expect(try c.regionRead(7, 0, 2).u32(16) & 0xFFFF == 0x1234)   // still answered
        }
        let c2 = try s.client()
        let efd2 = makeEventFD()
        defer { close(efd2) }
        #expect(try c2.setIRQs(flags: 0x4 | 0x20, index: 0, start: 0, count: 1, fds: [efd2]).isError == false)
        _ = try c2.regionWrite(0, 0, le32(1))
        #expect(drain(efd2) == 1)
    }

    /// While one write is blocked, a client that keeps replacing the eventfd and
    /// triggering it must not pile up queued signals, each holding a descriptor (it could
    /// fill the process's descriptor table): a replaced eventfd leaves the queue.
    @Test func replacedEventfdsDoNotPileUpBehindABlockedWrite() throws {
        let s = try Served()
        let c = try s.client()
        let efd = makeEventFD()
        defer { close(efd) }
        #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 0, start: 0, count: 1, fds: [efd]).isError == false)
        #expect(makeBlocking(efd))
        _ = try c.regionWrite(0, 0, le32(1))                           // the signalling thread blocks
        usleep(50_000)
        func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0 }
        let before = openDescriptors()
        for _ in 0 ..< 300 {
            _ = try c.setIRQs(flags: 0x4 | 0x20, index: 0, start: 0, count: 1, fds: [efd])   // a new server-side descriptor each time
            _ = try c.setIRQs(flags: 0x1 | 0x20, index: 0, start: 0, count: 1, fds: [])      // and a signal for it
        }
        #expect(openDescriptors() - before <= 16)
    }

    /// The same with a batch: the signalling thread blocks on one vector's eventfd while
    /// two more signals queue, the client lets that write through, and the thread blocks
    /// on the next of the batch. When the client leaves, the whole batch is dropped, so
    /// the next client's interrupts arrive.
    @Test func aBlockedBatchIsDroppedWhenTheClientLeaves() throws {
        let s = try Served()
        do {
            let c = try s.client()
            let fds = (0 ..< 3).map { _ in makeEventFD() }
            defer { fds.forEach { close($0) } }
            _ = try c.regionWrite(7, 4, le16(0x6))
            let cap = Int(try c.regionRead(7, 0x34, 1).payload[16])
            _ = try c.regionWrite(7, UInt64(cap + 2), le16(0x8000))      // MSI-X on
            #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 2, start: 1, count: 3, fds: fds).isError == false)
            for fd in fds { #expect(makeBlocking(fd)) }
            _ = try c.regionWrite(0, 4, le32(1))                           // blocks on the first
            usleep(50_000)
            _ = try c.regionWrite(0, 4, le32(2))                           // queued
            _ = try c.regionWrite(0, 4, le32(3))                           // queued
            var value: UInt64 = 0
            #expect(read(fds[0], &value, 8) == 8)                          // lets the first through
            usleep(50_000)                                                 // blocked on the second
        }
        let c2 = try s.client()
        let efd = makeEventFD()
        defer { close(efd) }
        _ = try c2.regionWrite(7, 4, le16(0x6))
        let cap = Int(try c2.regionRead(7, 0x34, 1).payload[16])
        _ = try c2.regionWrite(7, UInt64(cap + 2), le16(0x8000))
        #expect(try c2.setIRQs(flags: 0x4 | 0x20, index: 2, start: 1, count: 1, fds: [efd]).isError == false)
        _ = try c2.regionWrite(0, 4, le32(1))
        #expect(drain(efd) == 1)
    }

    @Test func msixVectorsFireOnTheirEventfdsWithoutTheCoresTable() throws {
        let s = try Served()
        let c = try s.client()
        let fds = (0 ..< 2).map { _ in makeEventFD() }
        defer { fds.forEach { close($0) } }
        _ = try c.regionWrite(7, 4, le16(0x6))           // bus master on
        let cap = Int(try c.regionRead(7, 0x34, 1).payload[16])
        _ = try c.regionWrite(7, UInt64(cap + 2), le16(0x8000)) // MSI-X enable, as QEMU forwards it
        // QEMU first enables the index with no descriptor, then sets vectors one by one.
        #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 2, start: 0, count: 1).isError == false)
        #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 2, start: 1, count: 2, fds: fds).isError == false)
        _ = try c.regionWrite(0, 4, le32(2), posted: true)
        _ = try c.regionWrite(0, 4, le32(1))
        #expect(drain(fds[0]) == 1 && drain(fds[1]) == 1)
        _ = try c.regionWrite(0, 4, le32(0))              // vector 0 has no eventfd: nothing, no error
        #expect(try c.setIRQs(flags: 0x4 | 0x20, index: 2, start: 3, count: 2, fds: fds).isError) // beyond 4 vectors
    }

    @Test func dmaGoesThroughMappedMemfdsAndFailsCleanlyAfterUnmap() throws {
        let s = try Served()
        let c = try s.client()
        let mem = sealedMemfd(size: 0x10000)
        defer { close(mem) }
        #expect(try c.dmaMap(address: 0x100000, size: 0x10000, fd: mem).isError == false)
        _ = try c.regionWrite(0, 8, le64(0x100040))
        _ = try c.regionWrite(0, 0x10, le32(0xCAFE_F00D))
        #expect(try c.regionRead(0, 0x18, 4).u32(16) == 1)
        let view = mmap(nil, 0x10000, PROT_READ, MAP_SHARED, mem, 0)!
        #expect(view.load(fromByteOffset: 0x40, as: UInt32.self) == 0xCAFE_F00D)
        munmap(view, 0x10000)
        // Unmap everything (QEMU's flag), then the same DMA fails inside the device.
        let u = try c.dmaUnmap(address: 0, size: 0, flags: 2)
        #expect(!u.isError)
        _ = try c.regionWrite(0, 0x10, le32(1))
        #expect(try c.regionRead(0, 0x18, 4).u32(16) == 2)
        #expect(s.device.memory.regions.isEmpty)
    }

    /// Memory unmapped while a device holds pointers into it outside its lock (a block
    /// request a backend thread fills) is not unmapped for good: its pages become private
    /// zero pages at the same address, reclaimed once nothing is lent out. Such ranges
    /// count against the region limit, so a client that keeps unmapping under stuck I/O
    /// (or reconnecting) cannot make the process hold more.
    @Test func unmappedMemoryWithPointersLentOutIsRetiredNotUnmapped() throws {
        let s = try Served()
        let c = try s.client()
        let mem = sealedMemfd(size: 0x10000)
        defer { close(mem) }
        #expect(try c.dmaMap(address: 0x100000, size: 0x10000, fd: mem).isError == false)
        let host = try #require(s.device.memory.regions.first?.host)
        s.device.memory.lend()
        #expect(try c.dmaUnmap(address: 0x100000, size: 0x10000).isError == false)
        #expect(s.device.memory.regions.isEmpty)
        #expect(s.device.dma.retiredCount == 1)
        #expect(host.load(fromByteOffset: 0x40, as: UInt32.self) == 0)   // still mapped, ours, zero
        host.storeBytes(of: 0xDEAD_BEEF, toByteOffset: 0x40, as: UInt32.self)
        let view = try #require(mmap(nil, 0x10000, PROT_READ, MAP_SHARED, mem, 0))
        #expect(view.load(fromByteOffset: 0x40, as: UInt32.self) == 0)   // the client's file is untouched
        munmap(view, 0x10000)

        for _ in 1 ..< s.device.dma.limit {
            #expect(try c.dmaMap(address: 0x100000, size: 0x10000, fd: mem).isError == false)
            #expect(try c.dmaUnmap(address: 0x100000, size: 0x10000).isError == false)
        }
        #expect(s.device.dma.retiredCount == s.device.dma.limit)
        #expect(try c.dmaMap(address: 0x100000, size: 0x10000, fd: mem).isError)   // the limit: refused
        s.device.memory.giveBack()
        #expect(try c.dmaMap(address: 0x100000, size: 0x10000, fd: mem).isError == false) // nothing lent: all unmapped
        #expect(s.device.dma.retiredCount == 0)
    }

    @Test func memoryThatCouldShrinkOrLiesAboutItsSizeIsRefused() throws {
        let s = try Served()
        let c = try s.client()
        let unsealed = sealedMemfd(size: 0x10000, seal: false)
        let small = sealedMemfd(size: 0x1000)
        defer { close(unsealed); close(small) }
        #expect(try c.dmaMap(address: 0, size: 0x10000, fd: unsealed).header.error == UInt32(ENOTSUP))
        #expect(try c.dmaMap(address: 0, size: 0x10000, fd: small).isError)        // beyond the file
        #expect(try c.dmaMap(address: 0x123, size: 0x1000, fd: small).isError)     // not page aligned
        #expect(try c.dmaMap(address: UInt64.max - 0xFFF, size: 0x2000, fd: small).isError) // wraps
        #expect(try c.dmaMap(address: 0xA0000, size: 0x20000, fd: nil).isError == false) // no descriptor: remembered
        #expect(s.device.memory.regions.isEmpty)
    }

    @Test func malformedMessagesGetErrorsAndTheSessionGoesOn() throws {
        let s = try Served()
        let c = try s.client()
        #expect(try c.call(.deviceGetInfo, []).isError)                              // no argsz
        #expect(try c.call(.deviceSetIRQs, le32(20) + le32(0x3 | 0x20) + le32(0) + le32(0) + le32(1)).isError) // two data types
        #expect(try c.call(.deviceSetIRQs, le32(20) + le32(0x2 | 0x20) + le32(2) + le32(0) + le32(4)).isError) // bools missing
        #expect(try c.call(.regionWrite, le64(0) + le32(0) + le32(100) + [1, 2]).isError) // shorter than declared
        #expect(try c.call(.regionRead, le64(0) + le32(0) + le32(1 << 20)).isError)        // beyond max transfer
        let unknown = VFIOUserHeader(messageID: 77, command: 99, messageSize: 16, flags: [])
        c.sendRaw(unknown.encoded())
        let r = try c.receive()
        #expect(r.isError && r.header.messageID == 77 && r.header.error == UInt32(ENOTSUP))
        let fd = makeEventFD()
        defer { close(fd) }
        #expect(try c.call(.deviceGetInfo, le32(16), fds: [fd]).isError == false) // stray descriptor closed, not kept
        #expect(try c.regionRead(7, 0, 2).u32(16) & 0xFFFF == 0x1234)          // still serving
    }

    @Test func aMessageLargerThanAnnouncedEndsOnlyThatClient() throws {
        let s = try Served()
        let c = try s.client()
        let huge = VFIOUserHeader(messageID: 1, command: 10, messageSize: 1 << 30, flags: [])
        c.sendRaw(huge.encoded())
        #expect(throws: (any Error).self) { try c.receive() } // connection closed
        let next = try s.client()                             // the next client is served
        #expect(try next.regionRead(7, 0, 2).u32(16) & 0xFFFF == 0x1234)
    }

    /// A departed client's memory and eventfds go, and so does what it programmed into
    /// the device (here bus mastering and a DMA address): the next client finds the
    /// device at power-on, not pointed at addresses the last one chose.
    @Test func disconnectUnmapsMemoryClosesEventfdsAndResetsTheDevice() throws {
        let s = try Served()
        do {
            let c = try s.client()
            let mem = sealedMemfd(size: 0x10000)
            defer { close(mem) }
            _ = try c.dmaMap(address: 0, size: 0x10000, fd: mem)
            _ = try c.regionWrite(7, 4, le16(0x6))                // memory space and bus master
            _ = try c.regionWrite(0, 8, le64(0x40))               // the probe's DMA address
            #expect(try c.regionRead(0, 8, 8).u64(16) == 0x40)
            #expect(s.device.memory.regions.count == 1)
        }
        let c2 = try s.client()
        #expect(try c2.regionRead(7, 4, 2).u32(16) & 0xFFFF == 0)
        #expect(try c2.regionRead(0, 8, 8).u64(16) == 0)
        #expect(s.device.memory.regions.isEmpty)
        #expect(s.server.clients == 2)
    }

    /// Sealed memfds may be sparse and their mappings reserve nothing: the bytes mapped
    /// in all are capped, so a client cannot fill the address space with a few messages,
    /// and the cap is the process's, not each device's (eight served devices once mapped
    /// 128 TiB between them).
    @Test func mappedBytesAreCappedAcrossTheServedDevices() throws {
        let budget = DMAByteBudget(limit: DMAByteBudget.process.limit)
        let s = try Served(dmaBudget: budget), t = try Served(dmaBudget: budget)
        let c = try s.client(), d = try t.client()
        let half = Int(budget.limit / 2)
        let mem = sealedMemfd(size: half)
        defer { close(mem) }
        #expect(try c.dmaMap(address: 0, size: UInt64(half), fd: mem).isError == false)
        #expect(try d.dmaMap(address: 0, size: UInt64(half), fd: mem).isError == false)
        #expect(try c.dmaMap(address: UInt64(half), size: 0x1000, fd: mem).isError)
        #expect(try d.dmaMap(address: UInt64(half), size: 0x1000, fd: mem).isError)
        #expect(s.device.memory.regions.count == 1 && t.device.memory.regions.count == 1)
        #expect(try c.dmaUnmap(address: 0, size: 0, flags: 2).isError == false)
        #expect(try d.dmaMap(address: UInt64(half), size: 0x1000, fd: mem).isError == false)   // room again
        #expect(budget.bytesMapped == UInt64(half) + 0x1000)
    }

    @Test func resetReturnsTheDeviceToPowerOn() throws {
        let s = try Served()
        let c = try s.client()
        _ = try c.regionWrite(7, 4, le16(0x6))
        #expect(try c.call(.deviceReset, []).isError == false)
        #expect(try c.regionRead(7, 4, 2).u32(16) & 0xFFFF == 0)
    }
}

@Suite struct ListenerTests {
    @Test func socketIsPrivateAndRemovedAndAForeignFileIsNotReplaced() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vfu-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/s.sock"
        let l = try UnixSocketListener(path: path)
        var st = stat()
        #expect(lstat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(throws: UnixSocketListenerError.inUse(path)) { try UnixSocketListener(path: path) }
        l.closeAndRemove()
        #expect(access(path, F_OK) != 0)
        let file = dir + "/f"
        _ = FileManager.default.createFile(atPath: file, contents: Data([1]))
        #expect(throws: UnixSocketListenerError.notASocket(file)) { try UnixSocketListener(path: file) }
        #expect(FileManager.default.contents(atPath: file) == Data([1]))
    }
}

/// A client can make the last close of a file it passes wait on something it controls;
/// the thread serving it must not wait with it (DescriptorCloser), nor block in a read
/// that a stop cannot end.
@Suite struct HostilePeerTests {
    /// Runs `body` on a thread of its own; whether it returned within `seconds`.
    func finishes(within seconds: Double, _ body: @escaping @Sendable () -> Void) -> Bool {
        let done = ThreadCondition()
        nonisolated(unsafe) var finished = false
        Thread.detachNewThread {
            body()
            done.withLock { finished = true; done.broadcast() }
        }
        return done.withLock { done.wait(until: MonotonicDeadline(secondsFromNow: seconds)) { finished } }
    }

    /// One out-of-band byte (AF_UNIX MSG_OOB) made the socket readable; the read dropped it
    /// and then waited, blocking, for bytes that never came: SIGTERM could not stop `serve`.
    @Test func anOutOfBandByteDoesNotKeepTheServerFromStopping() throws {
        let s = try Served()
        let c = try s.client()
        var byte: UInt8 = 0x78
        guard send(c.fd, &byte, 1, Int32(MSG_OOB)) == 1 else {
            // Kernels without CONFIG_AF_UNIX_OOB refuse the byte: nothing to test.
            #expect(errno == EOPNOTSUPP)
            return
        }
        usleep(200_000)   // the server wakes and reads
        let server = s.server
        #expect(finishes(within: 5) { server.stop() })
    }

    /// A TCP socket whose peer never reads, its send buffer full and SO_LINGER set, sent
    /// with a message and closed by the client: the server's close is the last one, which
    /// waits for the peer. The reply and the next requests must not wait for it.
    @Test func aLingeringSocketSentWithAMessageDoesNotStallTheServer() throws {
        let s = try Served()
        let c = try s.client()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0,
                                   sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                bind(listener, a, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, a, &length) == 0
            }
        }
        #expect(bound)
        let sender = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(sender, $0, length) }
        }
        #expect(connected == 0)
        let peer = accept(listener, nil, nil)   // never reads
        defer { close(peer) }                   // lets the lingering close finish
        _ = fcntl(sender, F_SETFL, fcntl(sender, F_GETFL) | O_NONBLOCK)
        let chunk = [UInt8](repeating: 0xAB, count: 65_536)
        while chunk.withUnsafeBytes({ write(sender, $0.baseAddress, $0.count) }) > 0 {}
        var linger = Glibc.linger(l_onoff: 1, l_linger: 1000)
        setsockopt(sender, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        // The descriptor rides with the header; the client's copy is closed before the
        // rest of the message goes, so the server holds the last reference.
        let header = VFIOUserHeader(messageID: 9, command: VFIOUserCommand.deviceGetInfo.rawValue, messageSize: 20, flags: [])
        c.sendRaw(header.encoded(), fds: [sender])
        close(sender)
        c.sendRaw(le32(16))
        let start = MonotonicTime.nanoseconds()
        #expect(try c.receive().header.messageID == 9)
        #expect(try c.regionRead(7, 0, 2).u32(16) & 0xFFFF == 0x1234)   // still serving
        #expect(MonotonicTime.nanoseconds() - start < 3_000_000_000)
    }
}
