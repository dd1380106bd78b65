#if canImport(Glibc)
import Glibc
#endif
import Synchronization

public enum MonotonicTime {
    /// CLOCK_MONOTONIC in nanoseconds.
    @inlinable public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// A handle to cancel a scheduled timer.
public struct TimerToken: Hashable, Sendable {
    public let id: UInt64
    public init(id: UInt64) { self.id = id }
}

/// Device time. Devices schedule their timers (interrupt moderation, link timers) through
/// this, never through the wall clock, so that in the test kit and the qtest mode time is
/// virtual and advances only when a test steps it — tests are deterministic.
public protocol DeviceClock: AnyObject, Sendable {
    /// Nanoseconds since the machine started.
    var now: UInt64 { get }
    /// Calls `action` once `now >= deadline` (on the I/O loop thread, or inside `VirtualClock.advance`).
    @discardableResult
    func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) -> TimerToken
    func cancel(_ token: TimerToken)
}

/// Virtual time: timers fire only inside `advance(by:)` / `advance(to:)`, in deadline order.
public final class VirtualClock: DeviceClock, @unchecked Sendable {
    private struct Entry { let deadline: UInt64; let id: UInt64; let action: @Sendable () -> Void }
    private struct State { var now: UInt64 = 0; var nextID: UInt64 = 1; var timers: [Entry] = [] }
    private let state = Mutex(State())

    public init() {}

    public var now: UInt64 { state.withLock { $0.now } }

    @discardableResult
    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) -> TimerToken {
        state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.timers.append(Entry(deadline: deadline, id: id, action: action))
            return TimerToken(id: id)
        }
    }

    public func cancel(_ token: TimerToken) {
        state.withLock { $0.timers.removeAll { $0.id == token.id } }
    }

    /// The earliest pending deadline, if any.
    public var nextDeadline: UInt64? { state.withLock { $0.timers.map(\.deadline).min() } }

    /// Moves time forward by `delta` ns, firing due timers in order (a timer a callback
    /// schedules inside the step fires too if it falls within it).
    public func advance(by delta: UInt64) {
        let target = state.withLock { $0.now.addingReportingOverflow(delta).overflow ? UInt64.max : $0.now + delta }
        advance(to: target)
    }

    public func advance(to target: UInt64) {
        while true {
            let due: Entry? = state.withLock { s in
                guard let i = s.timers.indices.filter({ s.timers[$0].deadline <= target })
                    .min(by: { (s.timers[$0].deadline, s.timers[$0].id) < (s.timers[$1].deadline, s.timers[$1].id) })
                else { return nil }
                let e = s.timers.remove(at: i)
                s.now = max(s.now, e.deadline)
                return e
            }
            guard let e = due else { break }
            e.action()
        }
        state.withLock { $0.now = max($0.now, target) }
    }
}

/// A one-shot timer a device owns (E1000's ITR/RDTR/RADV, a link-up delay). Re-arming
/// replaces the pending deadline. Callbacks run under the device's lock.
public final class DeviceTimer: @unchecked Sendable {
    private let clock: DeviceClock
    private let lock: DeviceLock
    private let action: () -> Void
    private var token: TimerToken?
    private var generation: UInt64 = 0
    public private(set) var deadline: UInt64?

    public init(clock: DeviceClock, lock: DeviceLock, action: @escaping () -> Void) {
        self.clock = clock
        self.lock = lock
        self.action = action
    }

    public var isArmed: Bool { lock.withLock { token != nil } }

    /// Fires `action` `delay` ns from now (replacing any pending deadline).
    public func arm(after delay: UInt64) {
        let now = clock.now
        arm(at: now.addingReportingOverflow(delay).overflow ? UInt64.max : now + delay)
    }

    public func arm(at deadline: UInt64) {
        lock.withLock {
            if let t = token { clock.cancel(t) }
            generation &+= 1
            let armed = generation
            self.deadline = deadline
            token = clock.schedule(at: deadline) { [weak self] in
                guard let self else { return }
                self.lock.withLock {
                    // A stale callback from a deadline that was since replaced or cancelled.
                    guard self.generation == armed, self.token != nil else { return }
                    self.token = nil
                    self.deadline = nil
                    self.action()
                }
            }
        }
    }

    public func cancel() {
        lock.withLock {
            if let t = token { clock.cancel(t) }
            token = nil
            deadline = nil
        }
    }
}
