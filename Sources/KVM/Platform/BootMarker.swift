import Logging
import Synchronization
import VMMCore

/// Firecracker's boot-timer idea on a port: the guest (its init, or a test program) writes
/// a byte to port 0x440 and the VMM records the time since it started, so benchmarks read
/// "VMM start → guest reached point N" without parsing the console.
public final class BootMarker: AccessHandler, @unchecked Sendable {
    public static let port: UInt64 = 0x440

    public struct Mark: Sendable, Equatable {
        public let value: UInt8
        /// Nanoseconds since the VMM process started the machine.
        public let nanoseconds: UInt64
    }

    private let start: UInt64
    private let logger: Logger
    private let marks = Mutex<[Mark]>([])

    public init(start: UInt64, logger: Logger) {
        self.start = start
        self.logger = logger
    }

    public var recorded: [Mark] { marks.withLock { $0 } }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let mark = Mark(value: UInt8(truncatingIfNeeded: value), nanoseconds: MonotonicTime.nanoseconds() &- start)
        let first = marks.withLock { m -> Bool in
            guard m.count < 256 else { return false }
            m.append(mark)
            return true
        }
        if first {
            logger.info("boot marker \(mark.value) after \(Double(mark.nanoseconds / 1000) / 1000) ms")
        }
    }
}
