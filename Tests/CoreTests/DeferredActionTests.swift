import Synchronization
import Testing
import VMMCore

@Suite("DeferredAction")
struct DeferredActionTests {
    /// However often a device defers before the loop runs, the loop runs the body once;
    /// once it ran, deferring again queues a new run.
    @Test func queuesAtMostOneRun() throws {
        let loop = try EPollEventLoop()
        let runs = Atomic<Int>(0)
        let action = DeferredAction(on: loop) { runs.add(1, ordering: .relaxed) }
        action.schedule()
        action.schedule()
        action.schedule()
        #expect(action.isScheduled)
        #expect(loop.runQueuedWork() == 1)
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(!action.isScheduled)
        #expect(loop.runQueuedWork() == 0)
        action.schedule()
        #expect(loop.runQueuedWork() == 1)
        #expect(runs.load(ordering: .relaxed) == 2)
    }

    /// Work that defers itself again from its own run is queued for the next turn, not
    /// run in the same one (each run is a new, bounded action).
    @Test func reschedulingFromTheBodyWaitsForTheNextTurn() throws {
        let loop = try EPollEventLoop()
        let runs = Atomic<Int>(0)
        let box = Mutex<DeferredAction?>(nil)
        let action = DeferredAction(on: loop) {
            if runs.add(1, ordering: .relaxed).newValue < 3 { box.withLock { $0 }?.schedule() }
        }
        box.withLock { $0 = action }
        action.schedule()
        #expect(loop.runQueuedWork() == 1)
        #expect(loop.runQueuedWork() == 1)
        #expect(loop.runQueuedWork() == 1)
        #expect(loop.runQueuedWork() == 0)
        #expect(runs.load(ordering: .relaxed) == 3)
        box.withLock { $0 = nil }
    }
}
