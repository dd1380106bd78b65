#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import VMMCore

@Suite(.timeLimit(.minutes(1))) struct EPollEventLoopTests {
    /// Waits (briefly, polling) for `condition`; the loop runs on its own thread.
    func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0 ..< 2000 {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    @Test func readinessExecuteAndTimers() throws {
        let loop = try EPollEventLoop()
        loop.startThread()
        defer { loop.stop() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let got = Mutex<[UInt8]>([])
        let readFD = fds[0]
        let reg = try loop.register(fd: readFD, events: .readable) { events in
            guard events.contains(.readable) else { return }
            var b: UInt8 = 0
            if read(readFD, &b, 1) == 1 { got.withLock { $0.append(b) } }
        }
        var byte: UInt8 = 42
        _ = write(fds[1], &byte, 1)
        #expect(eventually { got.withLock { $0 } == [42] })

        let ran = Atomic<Int>(0)
        loop.execute { ran.add(1, ordering: .relaxed) }
        #expect(eventually { ran.load(ordering: .relaxed) == 1 })

        let order = Mutex<[Int]>([])
        let start = loop.now
        loop.schedule(at: start + 20_000_000) { order.withLock { $0.append(2) } }
        loop.schedule(at: start + 5_000_000) { order.withLock { $0.append(1) } }
        let cancelled = loop.schedule(at: start + 10_000_000) { order.withLock { $0.append(99) } }
        loop.cancel(cancelled)
        #expect(eventually { order.withLock { $0 } == [1, 2] })
        #expect(loop.now >= start + 20_000_000)

        // Stop watching: further bytes are not read.
        loop.update(reg, events: [])
        byte = 7
        _ = write(fds[1], &byte, 1)
        usleep(20_000)
        #expect(got.withLock { $0 } == [42])
        loop.unregister(reg)
    }

    @Test func registeringABadDescriptorIsATypedError() throws {
        let loop = try EPollEventLoop()
        #expect(throws: EventLoopError.self) { try loop.register(fd: -1, events: .readable) { _ in } }
    }

    @Test func runReturnsAfterStop() throws {
        let loop = try EPollEventLoop()
        loop.startThread()
        loop.stop()
        loop.stop() // idempotent
    }

    /// Work handed to a stopped loop would never run, so it is not kept (a QMP client
    /// flooding set_link while the VM shuts down cannot grow the queue).
    @Test func aStoppedLoopKeepsNoWork() throws {
        let loop = try EPollEventLoop()
        loop.startThread()
        loop.stop()
        for _ in 0 ..< 1000 { loop.execute {} }
        #expect(loop.runQueuedWork() == 0)
    }

    /// Control commands hand work to the loop and wait; a stopped loop must not hold them
    /// forever, and work given up on must never run later.
    @Test func runAndWaitRunsOnTheLoopAndGivesUpOnAStoppedOne() throws {
        let loop = try EPollEventLoop()
        loop.startThread()
        let ran = Atomic<Int>(0)
        try loop.runAndWait(timeout: 5) { ran.add(1, ordering: .relaxed) }
        #expect(ran.load(ordering: .relaxed) == 1)
        loop.stop()
        #expect(throws: EventLoopTimeout.self) { try loop.runAndWait(timeout: 0.05) { ran.add(1, ordering: .relaxed) } }
        _ = loop.runQueuedWork()
        #expect(ran.load(ordering: .relaxed) == 1)
    }
}
