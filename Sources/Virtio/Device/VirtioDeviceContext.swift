import Logging
import VMMCore

/// What a virtio device gets: the machine's environment (memory, loop, lock, logs,
/// services…) and its transport. No config space, BAR or interrupt controller.
public struct VirtioDeviceContext: DeviceEnvironment, @unchecked Sendable {
    public let transport: VirtioTransport
    private let environment: DeviceEnvironment

    public init(environment: DeviceEnvironment, transport: VirtioTransport) {
        self.environment = environment
        self.transport = transport
    }

    public var memory: GuestMemory { environment.memory }
    public var clock: DeviceClock { environment.clock }
    public var eventLoop: EventLoop { environment.eventLoop }
    public var lock: DeviceLock { environment.lock }
    public var logger: Logger { environment.logger }
    public var guestLog: RateLimitedLogger { environment.guestLog }
    public var services: ServiceRegistry { environment.services }
    public var instanceIndex: Int { environment.instanceIndex }
    public var cost: ActionCostMeter { environment.cost }
    public var controlName: String { environment.controlName }
}
