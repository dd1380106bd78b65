#if canImport(Glibc)
import Glibc
#endif

/// Waiting for one descriptor unless a stop descriptor (an eventfd or signalfd that
/// becomes readable when the waiting must end) comes first: what every thread that
/// serves a peer does before a read or a write, so that a stop is never held off by a
/// peer that sends or reads nothing.
public enum StoppableWait {
    public enum Outcome: Equatable, Sendable {
        /// `fd` is ready for the events asked (or has an error or hang-up to report).
        case ready
        /// `stop` is readable; it is checked first, so a stop wins over a ready `fd`.
        case stopped
        case timedOut
        /// `poll` failed (the errno), not for a signal.
        case failed(Int32)
    }

    /// Waits until `fd` is ready for `events` (POLLIN, POLLOUT) or `stop` is readable, at
    /// most `milliseconds` (-1: no limit). A negative `stop` is never readable. A signal
    /// does not restart the time allowed: the wait goes on for what is left of it.
    public static func wait(_ fd: Int32, for events: Int16, orStop stop: Int32, milliseconds: Int32 = -1) -> Outcome {
        var watched = (pollfd(fd: fd, events: events, revents: 0), pollfd(fd: stop, events: Int16(POLLIN), revents: 0))
        let deadline = MonotonicTime.nanoseconds() &+ UInt64(max(milliseconds, 0)) &* 1_000_000
        var timeout = milliseconds
        while true {
            let ready = withUnsafeMutablePointer(to: &watched) {
                $0.withMemoryRebound(to: pollfd.self, capacity: 2) { poll($0, 2, timeout) }
            }
            if ready < 0 {
                guard errno == EINTR else { return .failed(errno) }
                if milliseconds >= 0 {
                    let now = MonotonicTime.nanoseconds()
                    guard now < deadline else { return .timedOut }
                    timeout = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
                }
                continue
            }
            if watched.1.revents != 0 { return .stopped }
            return ready == 0 ? .timedOut : .ready
        }
    }
}
