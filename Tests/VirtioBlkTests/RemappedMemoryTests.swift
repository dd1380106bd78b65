#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Testing
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioBlk

/// Guest RAM in a memory file, handed to `GuestMemory` as a borrowed region the way the
/// vfio-user server maps a client's DMA_MAP, so a test can unmap it and map it again under
/// a running device.
private final class RemappableRAM {
    let memory = GuestMemory(borrowedRegionLimit: 4)
    private let fd: Int32
    private let size: Int
    private var retired: [GuestMemoryRegion] = []

    init(size: Int = 32 << 20) throws {
        fd = clinux_memfd_create("test-ram", 0)
        ftruncate(fd, off_t(size))
        self.size = size
        try mapAgain()
    }

    /// DMA_MAP: the whole file as guest RAM from 0, at another host address each time.
    func mapAgain() throws {
        let p = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        try #require(p != MAP_FAILED)
        try memory.insert(GuestMemoryRegion(base: GuestAddress(0), size: UInt64(size), host: p))
    }

    /// DMA_UNMAP: the RAM leaves guest memory, and its old host address holds private zero
    /// pages (what the server leaves there), so a stale view reads zeros.
    func unmap() {
        for r in memory.remove(base: 0, size: nil) {
            _ = mmap(r.host, Int(r.size), PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            retired.append(r)
        }
    }

    deinit {
        for r in retired { munmap(r.host, Int(r.size)) }
        close(fd)
    }
}

/// A vfio-user client may unmap guest RAM and map it again while the device runs (QEMU's
/// memory listener does when it splits a section; a hostile client does it at will).
@Suite struct RemappedMemoryTests {
    typealias D = VirtioBlkDriver

    /// The rings are mapped again from the current layout: a request after the remap
    /// completes, and nothing is read from where the RAM used to be.
    @Test func ringsFollowRAMMappedAgainAtAnotherAddress() throws {
        let ram = try RemappableRAM()
        let d = try D(memory: ram.memory)
        d.bringUp()
        let pattern = [UInt8](repeating: 0xA5, count: 512)
        let write = d.submit(type: D.T.write, sector: 1, write: pattern)
        d.complete()
        #expect(d.status(at: write.status) == D.S.ok)

        ram.unmap()                          // a stale view would now read a zero avail index
        try ram.mapAgain()

        let read = d.submit(type: D.T.read, sector: 1, readLength: 512)
        d.complete()
        #expect(d.status(at: read.status) == D.S.ok)
        #expect(d.bytes(at: read.data, 512) == pattern)
        #expect(d.device?.badRequests == 0)
        #expect(d.status & 0x40 == 0)  // not DEVICE_NEEDS_RESET
    }

    /// While the ring is not RAM the device cannot reach it and waits, as with bus
    /// mastering off; once the RAM is back the next kick is served.
    @Test func ringOutOfRAMWaitsUntilItIsMappedAgain() throws {
        let ram = try RemappableRAM()
        let d = try D(memory: ram.memory)
        d.bringUp()

        ram.unmap()
        d.kick(0)                            // nothing to reach: no fault, no state change
        d.complete()
        #expect(d.status & 0x40 == 0)

        try ram.mapAgain()
        let read = d.submit(type: D.T.read, sector: 0, readLength: 512)
        d.complete()
        #expect(d.status(at: read.status) == D.S.ok)
    }

    /// Memory unmapped while a request is out: its data may have gone to retired pages,
    /// so it fails (IOERR), and the status reaches the status byte where the guest's
    /// memory is now, not the retired page.
    @Test func aRequestWhoseMemoryWasUnmappedInFlightFails() throws {
        let ram = try RemappableRAM()
        let d = try D(memory: ram.memory)
        d.bringUp()
        d.disk.hold()
        let read = d.submit(type: D.T.read, sector: 0, readLength: 512)
        d.complete()

        ram.unmap()
        try ram.mapAgain()
        d.disk.release()
        d.complete()
        #expect(d.status(at: read.status) == D.S.ioError)
        #expect(d.queues[0]?.takeUsed().map(\.length) == [1])
        #expect(ram.memory.lentOut.load(ordering: .relaxed) == 0)
        #expect(d.status & 0x40 == 0)
    }

    /// A request whose buffers a backend still fills counts as lent out of guest memory
    /// (what the vfio-user server waits for before unmapping pages for good), and stops
    /// counting when it completes or a reset drops it.
    @Test func requestsInFlightAreLentOut() throws {
        let d = try D()
        d.bringUp()
        let memory = d.machine.memory
        d.disk.hold()
        _ = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        #expect(memory.lentOut.load(ordering: .relaxed) == 2)   // the list entry and the backend
        d.disk.release()
        d.complete()
        #expect(memory.lentOut.load(ordering: .relaxed) == 0)

        d.disk.hold()
        _ = d.submit(type: D.T.read, readLength: 512)
        d.complete()
        d.setStatus(0)                                           // reset: the entry goes
        #expect(memory.lentOut.load(ordering: .relaxed) == 1)    // the backend still has it
        d.disk.release()
        d.complete()
        #expect(memory.lentOut.load(ordering: .relaxed) == 0)
    }
}
