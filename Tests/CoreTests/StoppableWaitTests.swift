#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Testing
import VMMCore

/// What the waiting thread and the signalling test share.
private final class SignalledWait: Sendable {
    let waiter = Atomic<UInt>(0)           // the waiting thread's pthread_t, once it waits
    let outcome = Mutex<(StoppableWait.Outcome, UInt64)?>(nil)
    let signallerStopped = Atomic<Bool>(false)
    let exited = Atomic<Bool>(false)
}

@Suite struct StoppableWaitTests {
    @Test func readyTimedOutAndStopped() throws {
        var data: [Int32] = [0, 0], stop: [Int32] = [0, 0]
        #expect(pipe(&data) == 0 && pipe(&stop) == 0)
        defer { for fd in data + stop { close(fd) } }
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0], milliseconds: 0) == .timedOut)
        #expect(StoppableWait.wait(data[1], for: Int16(POLLOUT), orStop: -1) == .ready)
        #expect(write(data[1], "x", 1) == 1)
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0]) == .ready)
        #expect(write(stop[1], "x", 1) == 1)
        // A stop wins over a descriptor that is ready too.
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0]) == .stopped)
        #expect(StoppableWait.wait(-1, for: 0, orStop: stop[0], milliseconds: 0) == .stopped)
    }

    /// Signals that keep interrupting `poll` do not restart the time allowed: a 200 ms
    /// wait under a signal every 10 ms ends when its 200 ms are up, not when the signals
    /// stop (after 3 s here). The wait runs on a thread of its own with the signal
    /// unblocked (the test's own thread may block it).
    @Test func signalsDoNotExtendTheWait() throws {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        var previous = sigaction()
        #expect(sigaction(SIGUSR2, &action, &previous) == 0)
        defer { sigaction(SIGUSR2, &previous, nil) }
        var data: [Int32] = [0, 0]
        #expect(pipe(&data) == 0)
        defer { for fd in data { close(fd) } }
        let readEnd = data[0]
        let shared = SignalledWait()
        let thread = Thread {
            var unblock = sigset_t()
            sigemptyset(&unblock)
            sigaddset(&unblock, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
            shared.waiter.store(UInt(pthread_self()), ordering: .releasing)
            let started = MonotonicTime.nanoseconds()
            let outcome = StoppableWait.wait(readEnd, for: Int16(POLLIN), orStop: -1, milliseconds: 200)
            shared.outcome.withLock { $0 = (outcome, MonotonicTime.nanoseconds() - started) }
            // Stay until no more signals come, so none is sent to a thread that is gone.
            while !shared.signallerStopped.load(ordering: .acquiring) { usleep(1_000) }
            usleep(1_000)
            shared.exited.store(true, ordering: .releasing)
        }
        thread.start()
        while shared.waiter.load(ordering: .acquiring) == 0 { usleep(1_000) }
        let target = pthread_t(shared.waiter.load(ordering: .acquiring))
        let until = MonotonicTime.nanoseconds() + 3_000_000_000
        while shared.outcome.withLock({ $0 == nil }), MonotonicTime.nanoseconds() < until {
            pthread_kill(target, SIGUSR2)
            usleep(10_000)
        }
        shared.signallerStopped.store(true, ordering: .releasing)
        while !shared.exited.load(ordering: .acquiring) { usleep(1_000) }
        let result = shared.outcome.withLock { $0 }
        #expect(result?.0 == .timedOut)
        #expect((result?.1 ?? .max) < 2_000_000_000, "the wait took \((result?.1 ?? 0) / 1_000_000) ms")
    }
}
