#if canImport(Glibc)
import Glibc
#endif
@testable import BlockBackends
import CLinux
import Synchronization
import Testing
import VMMBlock
import VMMCore
import VMMTestKit

@Suite struct FileBackendTests {
    let dir = TemporaryDirectory()

    private func open(_ path: String, readOnly: Bool = false, direct: Bool = false, loop: RunningLoop) throws -> FileBackend {
        try FileBackend(path: path, readOnly: readOnly, direct: direct, blockSize: nil, eventLoop: loop.loop)
    }

    @Test func writeReadFlushScatter() throws {
        let loop = try RunningLoop()
        let path = dir.file("disk.img", size: 1 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.size == 1 << 20)
        #expect(disk.geometry.logicalBlockSize == 512)
        #expect(disk.geometry.canFlush && disk.geometry.canWriteZeroes && !disk.geometry.readOnly)

        let out = GuestBuffer(count: 3 * 4096)
        out.fillPattern(seed: 7)
        // Three segments of odd sizes (sums to 12 KiB), at 64 KiB.
        let segments = [out.slice(0 ..< 1000), out.slice(1000 ..< 5096), out.slice(5096 ..< 12288)].map { UnsafeRawBufferPointer($0) }
        let c = Completions()
        #expect(disk.submit(.write(offset: 65536, from: segments), completion: c.handler(1)))
        #expect(c.wait(for: 1) == .ok)
        #expect(run(disk, .flush) == .ok)
        #expect(readFile(path, offset: 65536, count: 12288) == out.array)

        let back = GuestBuffer(count: 3 * 4096, fill: 0xEE)
        #expect(run(disk, .read(offset: 65536, into: [back.slice(0 ..< 512), back.slice(512 ..< 12288)])) == .ok)
        #expect(back.array == out.array)
        #expect(c.inlineCount == 0)
        #expect(disk.counters.writes.load(ordering: .relaxed) == 1)
        #expect(disk.counters.reads.load(ordering: .relaxed) == 1)
        #expect(disk.counters.bytesWritten.load(ordering: .relaxed) == 12288)
        #expect(disk.counters.flushes.load(ordering: .relaxed) == 1)
    }

    @Test func discardAndWriteZeroesReadBackZeroes() throws {
        let loop = try RunningLoop()
        let path = dir.file("zero.img", size: 1 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let data = GuestBuffer(count: 256 * 1024, fill: 0xAB)
        #expect(run(disk, .write(offset: 0, from: [data.all])) == .ok)

        // ext4/xfs/tmpfs punch holes; a filesystem that cannot is reported as such.
        if disk.geometry.canDiscard {
            #expect(run(disk, .discard(offset: 0, length: 65536)) == .ok)
            #expect(readFile(path, offset: 0, count: 65536) == [UInt8](repeating: 0, count: 65536))
        } else {
            #expect(run(disk, .discard(offset: 0, length: 65536)) == .unsupported)
        }
        #expect(run(disk, .writeZeroes(offset: 65536, length: 65536, mayUnmap: false)) == .ok)
        #expect(run(disk, .writeZeroes(offset: 131072, length: 4096, mayUnmap: true)) == .ok)
        #expect(readFile(path, offset: 65536, count: 65536) == [UInt8](repeating: 0, count: 65536))
        #expect(readFile(path, offset: 131072, count: 4096) == [UInt8](repeating: 0, count: 4096))
        // Around the zeroed ranges the data is intact.
        #expect(readFile(path, offset: 135168, count: 4096) == [UInt8](repeating: 0xAB, count: 4096))

        // The fallback path (writing zeroes) gives the same result.
        let io = FileIO(fd: Glibc.open(path, O_RDWR), direct: false, scratch: AlignedBuffer(count: 8192))
        defer { close(io.fd) }
        #expect(io.writeZeroes(offset: 200_000, length: 20_000) == 0)
        #expect(readFile(path, offset: 200_000, count: 20_000) == [UInt8](repeating: 0, count: 20_000))
        #expect(readFile(path, offset: 220_000, count: 100) == [UInt8](repeating: 0xAB, count: 100))
    }

    @Test func readPastEndOfFileReadsZeroes() throws {
        let loop = try RunningLoop()
        let path = dir.file("short.img", size: 8192)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let data = GuestBuffer(count: 8192, fill: 0x5A)
        #expect(run(disk, .write(offset: 0, from: [data.all])) == .ok)
        // Someone shrinks the file behind the backend's back: the guest still reads whole blocks.
        #expect(truncate(path, 4096) == 0)
        let back = GuestBuffer(count: 8192, fill: 0xFF)
        #expect(run(disk, .read(offset: 0, into: [back.bytes])) == .ok)
        #expect(Array(back.array[0 ..< 4096]) == [UInt8](repeating: 0x5A, count: 4096))
        #expect(Array(back.array[4096...]) == [UInt8](repeating: 0, count: 4096))
    }

    @Test func resize() throws {
        let loop = try RunningLoop()
        let path = dir.file("grow.img", size: 1 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let heard = Mutex<[UInt64]>([])
        disk.onResize { size in heard.withLock { $0.append(size) } }
        try disk.resize(to: 4 << 20)
        #expect(disk.geometry.size == 4 << 20)
        #expect(fileSize(path) == 4 << 20)
        #expect(eventually { heard.withLock { $0 } == [4 << 20] })   // the device hears of it on the loop
        #expect(throws: BlockBackendError.self) { try disk.resize(to: 1000) }   // not whole blocks
        try disk.resize(to: 512 * 1024)
        #expect(fileSize(path) == 512 * 1024)

        let ro = try open(dir.file("grow-ro.img", size: 1 << 20), readOnly: true, loop: loop)
        defer { ro.stop() }
        #expect(throws: BlockBackendError.readOnly) { try ro.resize(to: 1 << 20) }
    }

    /// Two writers on one image corrupt it: as QEMU locks its images, a disk open
    /// read-write is refused to any other open, a read-only one is shared among readers,
    /// and the lock goes with the backend.
    @Test func anImageInUseIsRefused() throws {
        let loop = try RunningLoop()
        let path = dir.file("locked.img", size: 1 << 20)
        let writer = try open(path, loop: loop)
        #expect(throws: DiskBackendError.self) { _ = try open(path, loop: loop) }
        #expect(throws: DiskBackendError.self) { _ = try open(path, readOnly: true, loop: loop) }
        writer.stop()
        let reader1 = try open(path, readOnly: true, loop: loop)
        let reader2 = try open(path, readOnly: true, loop: loop)
        #expect(throws: DiskBackendError.self) { _ = try open(path, loop: loop) }
        reader1.stop()
        reader2.stop()
        let again = try open(path, loop: loop)
        again.stop()
    }

    /// A write, zeroing or discard checked against the size before a shrink (queued
    /// when `block_resize` ran) fails instead of growing the file back.
    @Test func writesPastAShrunkEndFail() throws {
        let loop = try RunningLoop()
        let path = dir.file("shrink.img", size: 1 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        try disk.resize(to: 512 * 1024)
        let data = GuestBuffer(count: 4096, fill: 0x5A)
        #expect(run(disk, .write(offset: 512 * 1024 - 4096, from: [data.all])) == .ok)   // the last block still fits
        #expect(run(disk, .write(offset: 768 * 1024, from: [data.all])) == .ioError(errno: ENOSPC))
        #expect(run(disk, .writeZeroes(offset: 512 * 1024, length: 4096, mayUnmap: false)) == .ioError(errno: ENOSPC))
        #expect(fileSize(path) == 512 * 1024)
    }

    @Test func readOnlyRefusesWrites() throws {
        let loop = try RunningLoop()
        let path = dir.file("ro.img", size: 65536)
        let disk = try open(path, readOnly: true, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.readOnly && !disk.geometry.canDiscard && !disk.geometry.canWriteZeroes)
        let data = GuestBuffer(count: 4096, fill: 1)
        #expect(run(disk, .write(offset: 0, from: [data.all])) == .ioError(errno: EROFS))
        #expect(run(disk, .discard(offset: 0, length: 4096)) == .ioError(errno: EROFS))
        #expect(run(disk, .writeZeroes(offset: 0, length: 4096, mayUnmap: false)) == .ioError(errno: EROFS))
        #expect(run(disk, .read(offset: 0, into: [data.bytes])) == .ok)
        #expect(run(disk, .flush) == .ok)
        #expect(disk.counters.errors.load(ordering: .relaxed) == 3)
        #expect(readFile(path, offset: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))
    }

    @Test func queueFullThenStopCancelsQueued() throws {
        let loop = try RunningLoop()
        let path = dir.file("q.img", size: 65536)
        // No workers: requests stay queued, so the bound is exact.
        let disk = try FileBackend(path: path, readOnly: false, direct: false, blockSize: nil, queueLimit: 4, workerCount: 0, eventLoop: loop.loop)
        #expect(disk.geometry.queueLimit == 4)
        let c = Completions()
        for i in 0 ..< 4 { #expect(disk.submit(.flush, completion: c.handler(i))) }
        #expect(!disk.submit(.flush, completion: c.handler(99)))
        #expect(disk.counters.queueFull.load(ordering: .relaxed) == 1)
        #expect(c.count == 0)
        disk.stop()
        #expect(c.wait(count: 4))
        for i in 0 ..< 4 { #expect(c.result(i) == .ioError(errno: ECANCELED)) }
        #expect(c.result(99) == nil)   // refused: never completed
        disk.stop()   // idempotent
        // After stop every request is answered (with an error), never left hanging.
        #expect(run(disk, .flush) == .ioError(errno: ECANCELED))
        #expect(c.inlineCount == 0)
    }

    @Test func manyConcurrentRequests() throws {
        let loop = try RunningLoop()
        let path = dir.file("many.img", size: 4 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let buffers = (0 ..< 64).map { i -> GuestBuffer in
            let b = GuestBuffer(count: 4096)
            b.fillPattern(seed: UInt8(i))
            return b
        }
        let c = Completions()
        for (i, b) in buffers.enumerated() { #expect(disk.submit(.write(offset: UInt64(i) * 8192, from: [b.all]), completion: c.handler(i))) }
        #expect(c.wait(count: 64))
        for i in 0 ..< 64 {
            #expect(c.result(i) == .ok)
            #expect(readFile(path, offset: i * 8192, count: 4096) == buffers[i].array)
        }
    }

    /// O_DIRECT wants every segment's length a multiple of the device's logical block size
    /// (4096 on a 4K-sector disk): a page-aligned 512-byte segment next to a 3584-byte one
    /// is bounced, not handed to preadv (which answered EINVAL there).
    @Test func directIOBouncesSegmentsThatAreNotWholePages() {
        let page = GuestBuffer(count: 8192)
        let whole = UnsafeRawBufferPointer(page.slice(0 ..< 4096))
        #expect(FileIO.isAligned([whole]))
        #expect(!FileIO.isAligned([UnsafeRawBufferPointer(page.slice(0 ..< 512)), UnsafeRawBufferPointer(page.slice(4096 ..< 7680))]))
    }

    @Test func directIOWithUnalignedBuffers() throws {
        let loop = try RunningLoop()
        let path = dir.file("direct.img", size: 1 << 20)
        let disk: FileBackend
        do { disk = try open(path, direct: true, loop: loop) } catch let e as DiskBackendError {
            // The filesystem under /tmp refuses O_DIRECT: the message must say so.
            #expect(e.description.contains("O_DIRECT"))
            return
        }
        defer { disk.stop() }
        let out = GuestBuffer(count: 8192 + 512)
        out.fillPattern(seed: 3)
        // 512 bytes into a page: not aligned for O_DIRECT, so it goes through the bounce buffer.
        let unaligned = UnsafeRawBufferPointer(out.slice(512 ..< 8704))
        #expect(run(disk, .write(offset: 4096, from: [unaligned])) == .ok)
        #expect(run(disk, .write(offset: 16384, from: [UnsafeRawBufferPointer(out.slice(0 ..< 4096))])) == .ok)
        let back = GuestBuffer(count: 8192 + 512)
        #expect(run(disk, .read(offset: 4096, into: [back.slice(512 ..< 8704)])) == .ok)
        #expect(Array(back.array[512...]) == Array(out.array[512...]))
        #expect(readFile(path, offset: 16384, count: 4096) == Array(out.array[0 ..< 4096]))
    }

    @Test(.enabled(if: Host.canUseLoopDevices, "needs root, /dev/loop-control and losetup (util-linux) for a loop block device"))
    func blockDevice() throws {
        let loop = try RunningLoop()
        let image = dir.file("loop.img", size: 4 << 20)
        let attached = Shell.output("losetup", ["--find", "--show", image])
        let device = String(attached.output.split(separator: "\n").first ?? "")
        try #require(attached.status == 0 && device.hasPrefix("/dev/loop"), "losetup failed: \(attached.output)")
        defer { Shell.run("losetup", ["-d", device]) }
        let disk = try open(device, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.size == 4 << 20)
        #expect(!disk.geometry.canDiscard)
        let out = GuestBuffer(count: 8192)
        out.fillPattern(seed: 11)
        #expect(run(disk, .write(offset: 4096, from: [out.all])) == .ok)
        #expect(run(disk, .flush) == .ok)
        let back = GuestBuffer(count: 8192)
        #expect(run(disk, .read(offset: 4096, into: [back.bytes])) == .ok)
        #expect(back.array == out.array)
        #expect(run(disk, .writeZeroes(offset: 4096, length: 4096, mayUnmap: false)) == .ok)
        #expect(run(disk, .read(offset: 4096, into: [back.bytes])) == .ok)
        #expect(Array(back.array[0 ..< 4096]) == [UInt8](repeating: 0, count: 4096))
        #expect(throws: BlockBackendError.self) { try disk.resize(to: 8 << 20) }
    }

    /// A block device with 4096-byte sectors cannot take 512-byte blocks: refused with a
    /// line that says so (it was raised to 4096 without a word; NBD refuses the same).
    @Test(.enabled(if: Host.canUseLoopDevices, "needs root, /dev/loop-control and losetup (util-linux) for a loop block device"))
    func blockSizeBelowTheDevicesSectorsIsRefused() throws {
        let loop = try RunningLoop()
        let image = dir.file("loop4k.img", size: 4 << 20)
        let attached = Shell.output("losetup", ["--find", "--show", "--sector-size", "4096", image])
        let device = String(attached.output.split(separator: "\n").first ?? "")
        try #require(attached.status == 0 && device.hasPrefix("/dev/loop"), "losetup failed: \(attached.output)")
        defer { Shell.run("losetup", ["-d", device]) }
        #expect {
            try FileBackend(path: device, readOnly: false, direct: false, blockSize: 512, eventLoop: loop.loop)
        } throws: { e in
            (e as? DiskBackendError)?.description == "option 'disk=\(device)': block-size=512 is smaller than the device's 4096-byte sectors"
        }
        let disk = try open(device, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.logicalBlockSize == 4096)
    }

    /// Linux reports a writeback error once per open file and drops the pages' data, so
    /// the next `fdatasync` returns 0. Once a flush failed, every later one must fail too,
    /// or a write-through write (or a retried FLUSH) is acknowledged as durable though its
    /// data never reached the disk. Here: ext4 on a loop device whose backing file sits on
    /// a full 8 MiB tmpfs, 16 MiB written.
    @Test(.enabled(if: Host.canUseLoopDevices && Host.path(of: "mkfs.ext4") != nil,
                   "needs root, loop devices and mkfs.ext4 (e2fsprogs) for a filesystem whose writeback fails"))
    func aFailedFlushFailsEveryLaterFlush() throws {
        let loop = try RunningLoop()
        let backing = dir.path + "/backing", mnt = dir.path + "/mnt"
        mkdir(backing, 0o700)
        mkdir(mnt, 0o700)
        try #require(Shell.run("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", backing]) == 0, "mount tmpfs failed")
        defer { Shell.run("umount", [backing]) }
        let image = backing + "/fs.img"
        let fd = Glibc.open(image, O_CREAT | O_RDWR, 0o600)
        try #require(fd >= 0 && ftruncate(fd, 64 << 20) == 0)
        close(fd)
        let attached = Shell.output("losetup", ["--find", "--show", image])
        let device = String(attached.output.split(separator: "\n").first ?? "")
        try #require(attached.status == 0 && device.hasPrefix("/dev/loop"), "losetup failed: \(attached.output)")
        defer { Shell.run("losetup", ["-d", device]) }
        try #require(Shell.run("mkfs.ext4", ["-q", "-F", "-O", "^has_journal", device]) == 0, "mkfs.ext4 failed")
        try #require(Shell.run("mount", [device, mnt]) == 0, "mount ext4 failed")
        defer { Shell.run("umount", [mnt]) }
        let path = dir.file("mnt/disk.img", size: 32 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let data = GuestBuffer(count: 1 << 20)
        data.fillPattern(seed: 3)
        for i in 0 ..< 16 { #expect(run(disk, .write(offset: UInt64(i) << 20, from: [data.all])) == .ok) }
        let first = run(disk, .flush)
        guard case .ioError = first else {
            Issue.record("the first flush gave \(String(describing: first)); writeback should have failed on the full tmpfs")
            return
        }
        for _ in 0 ..< 4 {   // the reviewer's run: ENOSPC, EIO, then 0, 0, 0
            let later = run(disk, .flush)
            guard case .ioError = later else {
                Issue.record("a flush after a failed one gave \(String(describing: later))")
                return
            }
        }
    }

    /// QEMU locks single bytes of an image with shared locks; a read-only open took a
    /// shared lock over the whole file, which those do not conflict with, and read an image
    /// a QEMU was writing. The image here is held by qemu-io, read-write, as QEMU holds it.
    @Test(.enabled(if: Host.path(of: "qemu-io") != nil, "needs qemu-io (apt-get install qemu-utils)"))
    func aReadOnlyOpenIsRefusedWhileQEMUWritesTheImage() throws {
        let loop = try RunningLoop()
        let path = dir.file("shared.img", size: 1 << 20)
        var input: [Int32] = [0, 0]
        try #require(pipe(&input) == 0)
        _ = fcntl(input[1], F_SETFD, FD_CLOEXEC)   // the write end stays ours alone: closing it ends qemu-io
        let pid = try #require(Shell.spawn("qemu-io", ["-f", "raw", path], stdin: input[0]))
        close(input[0])
        var held = false
        for _ in 0 ..< 100 where !held {   // until qemu-io has the image open and locked
            let probe = Glibc.open(path, O_RDONLY)
            held = clinux_byte_is_range_locked(probe, FileDisk.qemuWriterByte) == 1
            close(probe)
            if !held { usleep(50_000) }
        }
        try #require(held, "qemu-io did not lock the image")
        #expect {
            try open(path, readOnly: true, loop: loop)
        } throws: { e in
            (e as? DiskBackendError)?.description == "option 'disk=\(path)': is in use read-write by another process (a QEMU writing it)"
        }
        close(input[1])   // qemu-io ends at the end of its input
        _ = Shell.wait(pid)
        let disk = try open(path, readOnly: true, loop: loop)
        disk.stop()
    }

    /// Flushes queued together ride on one `fdatasync` that started after their writes, as
    /// QEMU's do; one with nothing written since the last needs none. They once ran one
    /// after another, each its own `fdatasync`, holding every worker.
    @Test func flushesRideOnOneThatCoversTheirWrites() throws {
        let loop = try RunningLoop()
        let path = dir.file("flushes.img", size: 1 << 20)
        let disk = try open(path, loop: loop)
        defer { disk.stop() }
        let data = GuestBuffer(count: 4096, fill: 0x5A)
        #expect(run(disk, .write(offset: 0, from: [data.all])) == .ok)
        let c = Completions()
        for i in 0 ..< 8 { #expect(disk.submit(.flush, completion: c.handler(i))) }
        for i in 0 ..< 8 { #expect(c.wait(for: i) == .ok) }
        #expect(disk.syncCalls.load(ordering: .relaxed) == 1)
        #expect(run(disk, .flush) == .ok)                       // nothing written since
        #expect(disk.syncCalls.load(ordering: .relaxed) == 1)
        #expect(run(disk, .write(offset: 4096, from: [data.all])) == .ok)
        #expect(run(disk, .flush) == .ok)                       // a write since: a new one
        #expect(disk.syncCalls.load(ordering: .relaxed) == 2)
    }

    @Test func openErrorsAreClear() throws {
        let loop = try RunningLoop()
        let missing = dir.path + "/nope.img"
        #expect {
            try open(missing, loop: loop)
        } throws: { e in
            guard let e = e as? DiskBackendError, case let .system(option, value, _, code, _) = e else { return false }
            return option == "disk" && value == missing && code == ENOENT && e.description.contains("truncate -s")
        }
        #expect(access(missing, F_OK) != 0)   // not created
        #expect(throws: DiskBackendError.notADisk(path: dir.path, reason: "is a directory, not a disk image")) { try open(dir.path, loop: loop) }
    }
}
