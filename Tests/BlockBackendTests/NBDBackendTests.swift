#if canImport(Glibc)
import Glibc
#endif
@testable import BlockBackends
import Synchronization
import Testing
import VMMBlock
import VMMCore
import VMMTestKit

/// Against a real nbdkit on a unix socket in a temporary directory.
@Suite(.serialized, .enabled(if: Host.hasNbdkit, Host.nbdkitMissing))
struct NBDBackendTests {
    let dir = TemporaryDirectory()

    private func open(_ server: NBDKit, loop: RunningLoop, queueLimit: Int = 256, reconnectTimeout: Double = 30,
                      requestTimeout: Double = 0, readOnly: Bool = false) throws -> NBDBackend {
        try NBDBackend(uri: server.uri, readOnly: readOnly, blockSize: nil, queueLimit: queueLimit,
                       reconnectTimeout: reconnectTimeout, requestTimeout: requestTimeout, eventLoop: loop.loop)
    }

    @Test func memoryExportRoundTrip() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["memory", "64M"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let g = disk.geometry
        #expect(g.size == 64 << 20)
        #expect(!g.readOnly && g.canFlush && g.canDiscard && g.canWriteZeroes)
        #expect(disk.description.hasPrefix("nbd nbd+unix:///"))

        let out = GuestBuffer(count: 3 * 65536)
        out.fillPattern(seed: 9)
        let segments = [out.slice(0 ..< 4096), out.slice(4096 ..< 65536), out.slice(65536 ..< 196_608)].map { UnsafeRawBufferPointer($0) }
        let c = Completions()
        #expect(disk.submit(.write(offset: 1 << 20, from: segments), completion: c.handler(1)))
        #expect(c.wait(for: 1) == .ok)
        #expect(run(disk, .flush) == .ok)
        let back = GuestBuffer(count: 3 * 65536, fill: 0xEE)
        #expect(run(disk, .read(offset: 1 << 20, into: [back.slice(0 ..< 100_000), back.slice(100_000 ..< 196_608)])) == .ok)
        #expect(back.array == out.array)

        #expect(run(disk, .discard(offset: 1 << 20, length: 65536)) == .ok)
        #expect(run(disk, .writeZeroes(offset: (1 << 20) + 65536, length: 65536, mayUnmap: false)) == .ok)
        #expect(run(disk, .read(offset: 1 << 20, into: [back.bytes])) == .ok)
        #expect(Array(back.array[0 ..< 131_072]) == [UInt8](repeating: 0, count: 131_072))
        #expect(Array(back.array[131_072...]) == Array(out.array[131_072...]))
        #expect(c.inlineCount == 0)
        #expect(disk.counters.writes.load(ordering: .relaxed) == 1)
        #expect(disk.counters.reads.load(ordering: .relaxed) == 2)
        #expect(disk.counters.discards.load(ordering: .relaxed) == 1)
        #expect(disk.counters.writeZeroes.load(ordering: .relaxed) == 1)
    }

    /// An export without NBD_FLAG_SEND_FLUSH (nbdkit's eval plugin saying it cannot
    /// flush): a flush succeeds without a command to the server, as in QEMU's client. It
    /// was answered UNSUPP, which failed every write in write-through mode.
    @Test func flushOfAnExportThatCannotFlushSucceeds() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["eval", "get_size=echo 1048576", "can_write=exit 0", "can_flush=exit 3",
                                                   "pread=dd if=/dev/zero bs=$3 count=1 iflag=count_bytes 2>/dev/null",
                                                   "pwrite=cat >/dev/null"]))
        let disk = try open(server, loop: loop, reconnectTimeout: 5)
        defer { disk.stop() }
        #expect(!disk.geometry.canFlush)
        let data = GuestBuffer(count: 4096, fill: 7)
        #expect(run(disk, .write(offset: 0, from: [data.all])) == .ok)
        #expect(run(disk, .flush) == .ok)
    }

    @Test func fileExportDataReachesTheFile() throws {
        let loop = try RunningLoop()
        let path = dir.file("export.img", size: 8 << 20)
        let server = try #require(NBDKit(in: dir, ["file", path]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let c = Completions()
        let buffers = (0 ..< 32).map { i -> GuestBuffer in
            let b = GuestBuffer(count: 16384)
            b.fillPattern(seed: UInt8(i))
            return b
        }
        for (i, b) in buffers.enumerated() {
            #expect(disk.submit(.write(offset: UInt64(i) * 65536, from: [b.all]), completion: c.handler(i)))
        }
        #expect(c.wait(count: 32))
        #expect(run(disk, .flush) == .ok)
        for (i, b) in buffers.enumerated() {
            #expect(c.result(i) == .ok)
            #expect(readFile(path, offset: i * 65536, count: 16384) == b.array)
        }
    }

    @Test func serverBlockSizeConstraintsAreHonoured() throws {
        let loop = try RunningLoop()
        // The server wants 4 KiB blocks and at most 64 KiB per request (and refuses anything else).
        let server = try #require(NBDKit(in: dir, ["--filter=blocksize-policy", "memory", "16M", "blocksize-minimum=4096",
                                                   "blocksize-maximum=65536", "blocksize-error-policy=error"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.logicalBlockSize == 4096)
        // 1 MiB in two segments: split into 64 KiB commands.
        let out = GuestBuffer(count: 1 << 20)
        out.fillPattern(seed: 5)
        #expect(run(disk, .write(offset: 8192, from: [UnsafeRawBufferPointer(out.slice(0 ..< 262_144)),
                                                      UnsafeRawBufferPointer(out.slice(262_144 ..< 1 << 20))])) == .ok)
        let back = GuestBuffer(count: 1 << 20)
        #expect(run(disk, .read(offset: 8192, into: [back.bytes])) == .ok)
        #expect(back.array == out.array)
        #expect(run(disk, .writeZeroes(offset: 8192, length: 1 << 20, mayUnmap: true)) == .ok)

        // A guest block size below the server's minimum cannot work: refused when opening.
        #expect {
            try NBDBackend(uri: server.uri, readOnly: false, blockSize: 512, eventLoop: loop.loop)
        } throws: { e in "\(e)".contains("block-size=512 is smaller than the server's minimum block size 4096") }
    }

    /// A server whose payload limit is 4 KiB turns a 4 MiB write into 1,024 commands: they
    /// go out a window at a time, not all at once (a guest's 2 GiB request would be 512 Ki
    /// commands allocated in one go).
    @Test func aRequestOfManyCommandsIsIssuedAWindowAtATime() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["--filter=blocksize-policy", "memory", "16M", "blocksize-maximum=4096",
                                                   "blocksize-error-policy=error"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let out = GuestBuffer(count: 4 << 20)
        out.fillPattern(seed: 21)
        let c = Completions()
        #expect(disk.submit(.write(offset: 0, from: [UnsafeRawBufferPointer(out.slice(0 ..< 1_000_000)),
                                                      UnsafeRawBufferPointer(out.slice(1_000_000 ..< 4 << 20))]),
                            completion: c.handler(1)))
        // Queued behind it, completed after it.
        #expect(disk.submit(.flush, completion: c.handler(2)))
        #expect(c.wait(count: 2))
        #expect(c.result(1) == .ok && c.result(2) == .ok)
        let back = GuestBuffer(count: 4 << 20)
        #expect(run(disk, .read(offset: 0, into: [back.bytes])) == .ok)
        let same = back.array == out.array   // a Bool: a failing 4 MiB array comparison would be diffed for minutes
        #expect(same)
        #expect(disk.peakPiecesInFlight == NBDBackend.maxPiecesInFlight)
    }

    /// The server dies while a request of many commands is half issued: it is sent again
    /// whole on the next connection, and the data arrive.
    @Test func aHalfIssuedRequestIsResentWholeAfterAReconnect() throws {
        let loop = try RunningLoop()
        let path = dir.file("half.img", size: 2 << 20)
        let server = try #require(NBDKit(in: dir, ["--filter=blocksize-policy", "--filter=delay", "file", path,
                                                   "blocksize-maximum=4096", "wdelay=50ms"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let out = GuestBuffer(count: 1 << 20)   // 256 commands, more than 4 windows
        out.fillPattern(seed: 33)
        let c = Completions()
        #expect(disk.submit(.write(offset: 0, from: [out.all]), completion: c.handler(1)))
        usleep(200_000)
        server.stop(crash: true)
        usleep(100_000)
        #expect(c.count == 0)
        #expect(server.start())
        #expect(c.wait(count: 1, seconds: 30))
        #expect(c.result(1) == .ok)
        #expect(run(disk, .flush) == .ok)
        let same = readFile(path, offset: 0, count: 1 << 20) == out.array   // a Bool: see above
        #expect(same)
        #expect(disk.counters.reconnects.load(ordering: .relaxed) >= 1)
    }

    @Test func serverNeedingHugeBlocksIsRefused() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["--filter=blocksize-policy", "memory", "16M", "blocksize-minimum=65536",
                                                   "blocksize-preferred=65536", "blocksize-maximum=65536"]))
        #expect {
            try open(server, loop: loop)
        } throws: { e in "\(e)".contains("the server needs 65536-byte blocks; at most 4096 is supported") }
    }

    @Test func serverErrorsBecomeIOErrors() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["--filter=error", "memory", "16M", "error-pread=EIO", "error-pread-rate=100%"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let b = GuestBuffer(count: 4096, fill: 3)
        #expect(run(disk, .read(offset: 0, into: [b.bytes])) == .ioError(errno: EIO))
        #expect(run(disk, .write(offset: 0, from: [b.all])) == .ok)   // only reads fail
        #expect(disk.counters.errors.load(ordering: .relaxed) == 1)
        // The connection survives an error reply.
        #expect(disk.counters.reconnects.load(ordering: .relaxed) == 0)
    }

    @Test func readOnlyExport() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["-r", "memory", "16M"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        #expect(disk.geometry.readOnly && !disk.geometry.canDiscard && !disk.geometry.canWriteZeroes)
        let b = GuestBuffer(count: 4096, fill: 3)
        #expect(run(disk, .write(offset: 0, from: [b.all])) == .ioError(errno: EROFS))
        #expect(run(disk, .read(offset: 0, into: [b.bytes])) == .ok)
        #expect(throws: BlockBackendError.self) { try disk.resize(to: 1 << 30) }
    }

    @Test func slowServerAndBoundedQueue() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["--filter=delay", "memory", "16M", "rdelay=300ms"]))
        let disk = try open(server, loop: loop, queueLimit: 3)
        defer { disk.stop() }
        let b = (0 ..< 4).map { _ in GuestBuffer(count: 4096) }
        let c = Completions()
        let start = clockMilliseconds()
        for i in 0 ..< 3 { #expect(disk.submit(.read(offset: UInt64(i) * 4096, into: [b[i].bytes]), completion: c.handler(i))) }
        #expect(!disk.submit(.read(offset: 0, into: [b[3].bytes]), completion: c.handler(3)))
        #expect(disk.counters.queueFull.load(ordering: .relaxed) == 1)
        #expect(c.wait(count: 3))
        #expect(clockMilliseconds() - start >= 250)
        for i in 0 ..< 3 { #expect(c.result(i) == .ok) }
        // Room again once they completed.
        #expect(run(disk, .read(offset: 0, into: [b[3].bytes])) == .ok)
    }

    /// A server that stays connected and never answers a read: each time `request-timeout`
    /// passes with the read unanswered the connection is dropped and the read re-sent on a
    /// new one; the fifth send fails it with EIO. Writes answered all along do not keep the
    /// read alive (the clock is per request; the first version timed the connection's last
    /// reply). A slow server that answers within the timeout is not touched.
    @Test func aServerThatAnswersNothingIsGivenUpOnAfterTheRequestTimeout() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["--filter=delay", "memory", "1M", "rdelay=3600"]))
        let disk = try open(server, loop: loop, requestTimeout: 0.3)
        defer { disk.stop() }
        let b = GuestBuffer(count: 4096)
        let c = Completions()
        let start = clockMilliseconds()
        #expect(disk.submit(.read(offset: 0, into: [b.bytes]), completion: c.handler(1)))
        let w = GuestBuffer(count: 4096)
        var writes = 0
        while c.count == 0, clockMilliseconds() - start < 20_000 {
            if run(disk, .write(offset: 8192, from: [w.all])) == .ok { writes += 1 }
            usleep(50_000)
        }
        #expect(writes >= 10)
        #expect(c.result(1) == .ioError(errno: EIO))
        #expect(clockMilliseconds() - start >= 1_500)   // five sends of 0.3 s each
        #expect(disk.counters.requestTimeouts.load(ordering: .relaxed) == UInt64(NBDBackend.maxSends))
        #expect(disk.counters.reconnects.load(ordering: .relaxed) >= UInt64(NBDBackend.maxSends) - 1)
        // Writes are not delayed: the disk still works.
        #expect(run(disk, .write(offset: 0, from: [b.all])) == .ok)

        let slow = try #require(NBDKit(in: dir, ["--filter=delay", "memory", "1M", "rdelay=200ms"], name: "slow.sock"))
        let patient = try open(slow, loop: loop, requestTimeout: 1)
        defer { patient.stop() }
        #expect(run(patient, .read(offset: 0, into: [b.bytes])) == .ok)
        #expect(patient.counters.requestTimeouts.load(ordering: .relaxed) == 0)
    }

    @Test func serverRestartsRequestsWaitAndComplete() throws {
        let loop = try RunningLoop()
        let path = dir.file("restart.img", size: 8 << 20)
        let server = try #require(NBDKit(in: dir, ["file", path]))
        let disk = try open(server, loop: loop, reconnectTimeout: 20)
        defer { disk.stop() }
        let first = GuestBuffer(count: 4096, fill: 0x11)
        #expect(run(disk, .write(offset: 0, from: [first.all])) == .ok)

        server.stop(crash: true)
        usleep(200_000)   // let the loop see the hang-up
        let data = GuestBuffer(count: 8192)
        data.fillPattern(seed: 42)
        let back = GuestBuffer(count: 4096)
        let c = Completions()
        #expect(disk.submit(.write(offset: 65536, from: [data.all]), completion: c.handler(1)))
        #expect(disk.submit(.read(offset: 0, into: [back.bytes]), completion: c.handler(2)))
        usleep(500_000)
        #expect(c.count == 0)   // waiting for the server, not failed

        #expect(server.start())
        #expect(c.wait(count: 2, seconds: 8))
        #expect(c.result(1) == .ok)
        #expect(c.result(2) == .ok)
        #expect(back.array == first.array)
        #expect(run(disk, .flush) == .ok)
        #expect(readFile(path, offset: 65536, count: 8192) == data.array)
        #expect(disk.counters.reconnects.load(ordering: .relaxed) >= 1)
        #expect(c.inlineCount == 0)
    }

    @Test func requestsInFlightWhenTheServerDiesAreResent() throws {
        let loop = try RunningLoop()
        let path = dir.file("inflight.img", size: 1 << 20)
        // Writes take 400 ms: the server dies with them in flight.
        let server = try #require(NBDKit(in: dir, ["--filter=delay", "file", path, "wdelay=400ms"]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let data = (0 ..< 4).map { i -> GuestBuffer in
            let b = GuestBuffer(count: 4096)
            b.fillPattern(seed: UInt8(100 + i))
            return b
        }
        let c = Completions()
        for (i, b) in data.enumerated() { #expect(disk.submit(.write(offset: UInt64(i) * 4096, from: [b.all]), completion: c.handler(i))) }
        usleep(100_000)
        server.stop(crash: true)
        usleep(200_000)
        #expect(c.count == 0)   // neither failed nor falsely completed
        #expect(server.start())
        #expect(c.wait(count: 4, seconds: 8))
        for i in 0 ..< 4 { #expect(c.result(i) == .ok) }
        #expect(run(disk, .flush) == .ok)
        for (i, b) in data.enumerated() { #expect(readFile(path, offset: i * 4096, count: 4096) == b.array) }
        #expect(disk.counters.reconnects.load(ordering: .relaxed) >= 1)
    }

    @Test func serverGoneTooLongRequestsFailThenRecover() throws {
        let loop = try RunningLoop()
        let path = dir.file("gone.img", size: 1 << 20)
        let server = try #require(NBDKit(in: dir, ["file", path]))
        let disk = try open(server, loop: loop, reconnectTimeout: 1)
        defer { disk.stop() }
        server.stop(crash: true)
        usleep(100_000)
        let b = GuestBuffer(count: 4096)
        let c = Completions()
        let start = clockMilliseconds()
        #expect(disk.submit(.read(offset: 0, into: [b.bytes]), completion: c.handler(1)))
        let result = c.wait(for: 1, seconds: 6)
        guard case .ioError = result else {
            Issue.record("expected an I/O error after the reconnect timeout, got \(String(describing: result))")
            return
        }
        let elapsed = clockMilliseconds() - start
        #expect(elapsed >= 700 && elapsed < 4000)
        // Still down: new requests fail at once instead of waiting.
        let quick = clockMilliseconds()
        if case .ioError = run(disk, .flush) {} else { Issue.record("a request while the server is gone must fail") }
        #expect(clockMilliseconds() - quick < 500)
        // The server is back: the disk works again.
        #expect(server.start())
        #expect(eventually(6) { run(disk, .read(offset: 0, into: [b.bytes])) == .ok })
    }

    /// A server that drops the connection at a request (it crashes on that request, or
    /// answers it with a protocol error: libnbd fails the commands of a dropped connection
    /// alike) and accepts the next connection: the request is sent `maxSends` times, then
    /// fails with EIO. Each successful handshake restarted the reconnect timeout, so it
    /// was resent for ever (79 reconnects in 8 s) and the guest never got an answer.
    @Test(.enabled(if: Host.path(of: "python3") != nil, "needs python3 for the fake NBD server"))
    func aRequestThatKillsEveryConnectionFailsAfterMaxSends() throws {
        let loop = try RunningLoop()
        let socketPath = dir.path + "/drops.sock"
        let script = String(#filePath.dropLast("NBDBackendTests.swift".count)) + "Peers/nbd-drops-every-request.py"
        let peer = try #require(Shell.spawn("python3", [script, socketPath]))
        defer { Shell.kill(peer) }
        #expect(eventually(5) { access(socketPath + ".ready", F_OK) == 0 })
        let disk = try NBDBackend(uri: "nbd+unix:///?socket=\(socketPath)", readOnly: false, blockSize: nil, queueLimit: 16,
                                  reconnectTimeout: 1, eventLoop: loop.loop)
        defer { disk.stop() }
        let b = GuestBuffer(count: 4096)
        let c = Completions()
        #expect(disk.submit(.read(offset: 0, into: [b.bytes]), completion: c.handler(1)))
        let result = c.wait(for: 1, seconds: 15)
        #expect(result == .ioError(errno: EIO), "\(String(describing: result))")
        #expect(disk.counters.reconnects.load(ordering: .relaxed) >= UInt64(NBDBackend.maxSends - 1))
    }

    @Test func exportGrownOnReconnectIsReported() throws {
        let loop = try RunningLoop()
        let path = dir.file("grow.img", size: 1 << 20)
        let server = try #require(NBDKit(in: dir, ["file", path]))
        let disk = try open(server, loop: loop)
        defer { disk.stop() }
        let seen = Mutex<UInt64>(0)
        disk.onResize { size in seen.withLock { $0 = size } }
        server.stop(crash: true)
        #expect(truncate(path, 2 << 20) == 0)
        #expect(server.start())
        #expect(eventually(6) { seen.withLock { $0 } == 2 << 20 })
        #expect(disk.geometry.size == 2 << 20)
    }

    @Test func stopCancelsWaitingRequests() throws {
        let loop = try RunningLoop()
        let server = try #require(NBDKit(in: dir, ["memory", "16M"]))
        let disk = try open(server, loop: loop)
        server.stop(crash: true)
        usleep(100_000)
        let c = Completions()
        #expect(disk.submit(.flush, completion: c.handler(1)))
        disk.stop()
        #expect(c.wait(for: 1) == .ioError(errno: ECANCELED))
        disk.stop()   // idempotent
        #expect(run(disk, .flush) == .ioError(errno: ECANCELED))
    }
}
