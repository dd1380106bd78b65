import Synchronization
import VMMCore

/// An `InterruptController` that records what devices signalled, for assertions.
public final class RecordingInterrupts: InterruptController, Sendable {
    public enum Event: Equatable, Sendable {
        case line(Int, level: Bool)
        case msi(address: UInt64, data: UInt32)
    }

    private let state = Mutex<(events: [Event], levels: [Int: Bool])>(([], [:]))
    /// Called after each event is recorded (the qtest server forwards them).
    public let observer = Mutex<(@Sendable (Event) -> Void)?>(nil)

    public init() {}

    public func setIRQ(_ line: Int, level: Bool) {
        state.withLock { s in
            s.events.append(.line(line, level: level))
            s.levels[line] = level
        }
        observer.withLock { $0 }?(.line(line, level: level))
    }

    public func signalMSI(address: UInt64, data: UInt32) {
        state.withLock { $0.events.append(.msi(address: address, data: data)) }
        observer.withLock { $0 }?(.msi(address: address, data: data))
    }

    public var events: [Event] { state.withLock { $0.events } }
    /// The current level of interrupt line `line`.
    public func level(line: Int) -> Bool { state.withLock { $0.levels[line] ?? false } }
    /// MSI/MSI-X messages in order.
    public var messages: [(address: UInt64, data: UInt32)] {
        state.withLock { s in s.events.compactMap { if case let .msi(a, d) = $0 { (a, d) } else { nil } } }
    }
    public func clear() { state.withLock { $0.events.removeAll() } }
}
