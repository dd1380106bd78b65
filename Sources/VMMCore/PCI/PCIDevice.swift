import Logging

/// One option of a device type, for `swiftvmm devices` and error messages.
public struct OptionHelp: Sendable {
    public let key: String
    public let value: String
    public let help: String
    public init(_ key: String, _ value: String, _ help: String) {
        self.key = key; self.value = value; self.help = help
    }
}

/// A PCI device model: bhyve's `struct pci_devemu` as a Swift protocol.
///
/// | bhyve `pci_devemu`   | here                                   |
/// |----------------------|----------------------------------------|
/// | `pe_emu`             | `typeName`                             |
/// | `pe_init`            | `init(options:context:)`               |
/// | `pe_barread/write`   | `barRead` / `barWrite`                 |
/// | `pe_cfgread/write`   | `configRead` / `configWrite` (optional)|
///
/// The device describes itself in `init` through `context.config` (identity, BARs) and
/// `context.interrupts` (INTx, MSI, MSI-X); the core does the rest of config space, BAR
/// sizing and placement, and the MSI-X table. All calls come with `context.lock` held.
public protocol PCIDevice: AnyObject {
    /// What a user types in a device list (`e1000`, `virtio-net`).
    static var typeName: String { get }
    /// One line for `swiftvmm devices`.
    static var summary: String { get }
    /// The options `init` understands (for help; not used for parsing).
    static var optionHelp: [OptionHelp] { get }

    /// Creates the device. Take every option you understand out of `options`; whatever
    /// is left is reported to the user as unknown. Throw `OptionError` for bad values.
    init(options: inout DeviceOptions, context: PCIDeviceContext) throws

    /// A guest read of `size` (1, 2, 4 or 8) bytes at `offset` in BAR `bar`.
    func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64
    /// A guest write of `size` (1, 2, 4 or 8) bytes at `offset` in BAR `bar`.
    func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64)

    /// Device-specific config registers beyond what the core emulates; nil = core handles it.
    func configRead(offset: Int, size: Int) -> UInt32?
    /// Return true if the device consumed the write (the core then does not store it).
    func configWrite(offset: Int, size: Int, value: UInt32) -> Bool

    /// Machine reset: back to power-on state (the core resets config space itself).
    func reset()
    /// The VM is going away: release backends, file descriptors, timers.
    func shutdown()
}

public extension PCIDevice {
    func configRead(offset: Int, size: Int) -> UInt32? { nil }
    func configWrite(offset: Int, size: Int, value: UInt32) -> Bool { false }
    func reset() {}
    func shutdown() {}
    static var optionHelp: [OptionHelp] { [] }
}

/// Everything a device may use. It never sees KVM or a concrete backend.
public struct PCIDeviceContext: @unchecked Sendable {
    public let memory: GuestMemory
    /// Fill in identity, declare BARs.
    public let config: PCIConfigSpace
    /// INTx, MSI, MSI-X.
    public let interrupts: PCIInterrupts
    public let clock: DeviceClock
    public let eventLoop: EventLoop
    /// Held by the bus around every config/BAR access; take it in loop and timer callbacks.
    public let lock: DeviceLock
    public let logger: Logger
    /// Guest-triggered problems: rate-limited.
    public let guestLog: RateLimitedLogger
    /// Typed services the machine offers (e.g. the network backend factory).
    public let services: ServiceRegistry
    /// Doorbells: register fast paths for notify registers (ioeventfd under KVM).
    public let doorbells: DoorbellRegistry
    /// 0 for the first device added to the machine, 1 for the next… (default MACs).
    public let instanceIndex: Int
    /// The cost of the guest action in progress (count descriptors, frames, bytes; defer
    /// work when `shouldDefer`). The bus brackets register accesses and doorbells; the
    /// device brackets its own entry points (frames from a backend, loop continuations).
    public let cost: ActionCostMeter
    /// The user's name for the device (`id=`), if any.
    public let id: String?

    /// The name a control socket knows this device by: its `id=`, else `devN` by the
    /// order devices were added.
    public var controlName: String { id ?? "dev\(instanceIndex)" }
}

/// Typed lookup of machine services, so a layer can offer something to devices without
/// the core knowing its type (the network layer registers its backend factory here).
public final class ServiceRegistry: @unchecked Sendable {
    private var services: [ObjectIdentifier: Any] = [:]
    public init() {}
    public func register<T>(_ type: T.Type, _ service: T) { services[ObjectIdentifier(type)] = service }
    public func resolve<T>(_ type: T.Type) -> T? { services[ObjectIdentifier(type)] as? T }
}

/// A write-only register whose writes should not wait for a vCPU exit: virtio's queue
/// notify. The device registers it; the bus keeps the registration pointed at wherever
/// the BAR is mapped, and under KVM an ioeventfd fires `handler` on the I/O loop instead
/// of exiting. Without KVM (tests, qtest) the device's `barWrite` sees the write as usual.
public final class DoorbellRegistry: @unchecked Sendable {
    public struct Doorbell {
        public let bar: Int
        public let offset: UInt64
        public let size: Int
        /// Only writes of this value hit the doorbell (ioeventfd datamatch); nil = any.
        public let value: UInt64?
        public let handler: @Sendable () -> Void
    }
    public private(set) var doorbells: [Doorbell] = []
    public init() {}
    public func register(bar: Int, offset: UInt64, size: Int, value: UInt64? = nil, handler: @escaping @Sendable () -> Void) {
        doorbells.append(Doorbell(bar: bar, offset: offset, size: size, value: value, handler: handler))
    }
}

/// What a platform (KVM) offers to accelerate doorbells; absent in tests.
public protocol DoorbellAccelerator: AnyObject, Sendable {
    /// A doorbell that fires `handler` on the I/O loop, without a vCPU exit, for writes of
    /// `size` bytes (of `value` only, when given) to wherever it is placed; nil when the
    /// platform cannot make one. It is placed nowhere yet.
    func makeDoorbell(size: Int, value: UInt64?, handler: @escaping @Sendable () -> Void) -> AcceleratedDoorbell?
}

/// One accelerated doorbell. It keeps its eventfd while it moves, as QEMU keeps a virtio
/// queue's host notifier across BAR moves: a kick counted before a move is still
/// delivered, and a guest toggling decoding costs ioctls, not new descriptors.
public protocol AcceleratedDoorbell: AnyObject, Sendable {
    /// Moves the doorbell to `place`, or off the bus for nil. Writes to a place the
    /// platform refused take the exit path. False only when another doorbell still holds
    /// the place (another vCPU is moving that device's BAR away): worth trying again once
    /// it has moved.
    func move(to place: DoorbellPlace?) -> Bool
}

/// Where a doorbell answers: an address in port I/O or MMIO space.
public struct DoorbellPlace: Equatable, Sendable {
    public let space: AddressSpaceKind
    public let address: UInt64
    public init(space: AddressSpaceKind, address: UInt64) { self.space = space; self.address = address }
}
