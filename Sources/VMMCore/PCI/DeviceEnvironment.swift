import Logging

/// What every device gets from its machine, whatever bus or transport it sits behind:
/// memory, time, the I/O loop, its lock, logs, services. `PCIDeviceContext` adds the PCI
/// function (config space, interrupts, doorbells); a virtio device gets only this plus
/// its transport (`VirtioDeviceContext`), so it cannot touch a BAR.
public protocol DeviceEnvironment {
    var memory: GuestMemory { get }
    var clock: DeviceClock { get }
    var eventLoop: EventLoop { get }
    /// Held around every access from the guest; take it in loop and timer callbacks.
    var lock: DeviceLock { get }
    var logger: Logger { get }
    /// Guest-triggered problems: rate-limited.
    var guestLog: RateLimitedLogger { get }
    /// Typed services the machine offers (backend factories, the NIC link registry).
    var services: ServiceRegistry { get }
    /// 0 for the first device added to the machine, 1 for the next… (default MACs).
    var instanceIndex: Int { get }
    /// The cost of the guest action in progress (see `ActionCostMeter`).
    var cost: ActionCostMeter { get }
    /// The name a control socket knows this device by: its `id=`, else `devN`.
    var controlName: String { get }
}

extension PCIDeviceContext: DeviceEnvironment {}
