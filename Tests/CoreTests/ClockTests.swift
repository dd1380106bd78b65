import Synchronization
import Testing
import VMMCore

/// A thread-safe list for recording callback order.
final class Trace: Sendable {
    private let items = Mutex<[String]>([])
    func add(_ s: String) { items.withLock { $0.append(s) } }
    var all: [String] { items.withLock { $0 } }
}

@Suite struct VirtualClockTests {
    @Test func timersFireOnlyWhenSteppedInDeadlineThenArmingOrder() {
        let clock = VirtualClock()
        let trace = Trace()
        clock.schedule(at: 300) { trace.add("c@\(clock.now)") }
        clock.schedule(at: 100) { trace.add("a@\(clock.now)") }
        clock.schedule(at: 100) { trace.add("b@\(clock.now)") }
        #expect(trace.all.isEmpty)
        #expect(clock.nextDeadline == 100)
        clock.advance(by: 99)
        #expect(trace.all.isEmpty && clock.now == 99)
        clock.advance(by: 1)
        #expect(trace.all == ["a@100", "b@100"])
        clock.advance(to: 1000)
        #expect(trace.all == ["a@100", "b@100", "c@300"])
        #expect(clock.now == 1000)
        #expect(clock.nextDeadline == nil)
    }

    @Test func timerScheduledInsideAStepFiresInTheSameStep() {
        let clock = VirtualClock()
        let trace = Trace()
        clock.schedule(at: 10) {
            trace.add("first@\(clock.now)")
            clock.schedule(at: clock.now + 5) { trace.add("second@\(clock.now)") }
            clock.schedule(at: clock.now + 500) { trace.add("late") }
        }
        clock.advance(by: 100)
        #expect(trace.all == ["first@10", "second@15"])
        #expect(clock.nextDeadline == 510)
    }

    @Test func cancelAndSaturation() {
        let clock = VirtualClock()
        let trace = Trace()
        let t = clock.schedule(at: 5) { trace.add("x") }
        clock.cancel(t)
        clock.advance(by: 10)
        #expect(trace.all.isEmpty)
        clock.advance(by: UInt64.max) // saturates instead of trapping
        #expect(clock.now == UInt64.max)
        clock.advance(to: 3) // time never goes back
        #expect(clock.now == UInt64.max)
    }
}

@Suite struct DeviceTimerTests {
    @Test func rearmReplacesTheDeadline() {
        let clock = VirtualClock()
        let lock = DeviceLock()
        let trace = Trace()
        let timer = DeviceTimer(clock: clock, lock: lock) { trace.add("fired@\(clock.now)") }
        timer.arm(after: 100)
        timer.arm(after: 300) // replaces, does not add
        #expect(timer.isArmed && timer.deadline == 300)
        clock.advance(by: 200)
        #expect(trace.all.isEmpty)
        clock.advance(by: 100)
        #expect(trace.all == ["fired@300"])
        #expect(!timer.isArmed && timer.deadline == nil)
        timer.arm(after: 50)
        timer.cancel()
        clock.advance(by: 1000)
        #expect(trace.all == ["fired@300"])
    }

    @Test func callbackMayRearmItself() {
        let clock = VirtualClock()
        let lock = DeviceLock()
        let trace = Trace()
        let box = Mutex<DeviceTimer?>(nil)
        let timer = DeviceTimer(clock: clock, lock: lock) {
            trace.add("tick@\(clock.now)")
            if trace.all.count < 3 { box.withLock { $0 }?.arm(after: 10) }
        }
        box.withLock { $0 = timer }
        timer.arm(after: 10)
        clock.advance(by: 100)
        #expect(trace.all == ["tick@10", "tick@20", "tick@30"])
        #expect(!timer.isArmed)
    }

    @Test func twoTimersOrderAndArmInThePast() {
        let clock = VirtualClock()
        let lock = DeviceLock()
        let trace = Trace()
        let a = DeviceTimer(clock: clock, lock: lock) { trace.add("a") }
        let b = DeviceTimer(clock: clock, lock: lock) { trace.add("b") }
        clock.advance(by: 50)
        b.arm(after: 20)
        a.arm(at: 10) // already due: fires on the next step
        a.arm(after: UInt64.max) // saturates, never fires within this test
        a.arm(at: 60)
        clock.advance(by: 100)
        #expect(trace.all == ["a", "b"])
    }
}
