#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CLinux

/// Readiness a file descriptor is watched for.
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = IOEvents(rawValue: UInt32(EPOLLIN.rawValue))
    public static let writable = IOEvents(rawValue: UInt32(EPOLLOUT.rawValue))
    /// Hang-up or error: the peer went away.
    public static let hangup = IOEvents(rawValue: UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue) | UInt32(EPOLLRDHUP.rawValue))
    /// Closed both ways, or an error: the peer shut more than its sending side.
    public static let closed = IOEvents(rawValue: UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue))
}

public struct IORegistration: Hashable, Sendable {
    public let id: UInt64
}

public enum EventLoopError: Error, CustomStringConvertible {
    case system(call: String, errno: Int32)
    public var description: String {
        switch self {
        case let .system(call, e): "\(call) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// The one I/O loop of a VM: backends' sockets and TAP fds, ioeventfds, timers.
/// Handlers run on the loop's thread. Devices take their `DeviceLock` in handlers.
public protocol EventLoop: AnyObject, Sendable {
    /// Watches `fd` for `events`; `handler` gets the events that occurred.
    func register(fd: Int32, events: IOEvents, _ handler: @escaping @Sendable (IOEvents) -> Void) throws(EventLoopError) -> IORegistration
    /// Changes the watched events (e.g. stop reading under back-pressure: `[]`).
    func update(_ registration: IORegistration, events: IOEvents)
    func unregister(_ registration: IORegistration)
    /// Runs `work` on the loop thread soon (thread-safe; wakes the loop).
    func execute(_ work: @escaping @Sendable () -> Void)
}
