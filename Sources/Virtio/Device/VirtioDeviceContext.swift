import Logging
import VMMCore

/// What a virtio device gets: the machine's environment (memory, loop, lock, logs,
/// services…) and its transport. No config space, BAR or interrupt controller.
public struct VirtioDeviceContext: DeviceEnvironment, @unchecked Sendable {
    public let transport: VirtioTransport
    private let environment: DeviceEnvironment
    /// What the data paths use per descriptor and per frame, taken from the environment
    /// once (an environment never changes them): read through the protocol, each access
    /// was a witness call and a retain/release pair.
    public let memory: GuestMemory
    public let cost: ActionCostMeter
    public let lock: DeviceLock
    public let guestLog: RateLimitedLogger

    public init(environment: DeviceEnvironment, transport: VirtioTransport) {
        self.environment = environment
        self.transport = transport
        memory = environment.memory
        cost = environment.cost
        lock = environment.lock
        guestLog = environment.guestLog
    }

    public var clock: DeviceClock { environment.clock }
    public var eventLoop: EventLoop { environment.eventLoop }
    public var logger: Logger { environment.logger }
    public var services: ServiceRegistry { environment.services }
    public var instanceIndex: Int { environment.instanceIndex }
    public var controlName: String { environment.controlName }
}
