import Logging

/// A device placed on the bus: its slot, config space, interrupts and BAR mappings.
public final class PCIFunction: @unchecked Sendable {
    public let slot: Int
    public let function: Int
    public let device: PCIDevice
    public let config: PCIConfigSpace
    public let interrupts: PCIInterrupts
    public let lock: DeviceLock
    public let doorbells: DoorbellRegistry
    public let name: String
    /// The device's per-action cost meter (see `ActionCostMeter`).
    public let cost: ActionCostMeter
    /// The user's name for the device (`id=`), if any.
    public let id: String?
    /// Where each BAR is currently mapped (nil: not decoding).
    public internal(set) var mappedBARs: [Range<UInt64>?] = Array(repeating: nil, count: 6)
    var mappingIDs: [UInt64?] = Array(repeating: nil, count: 6)
    /// The accelerator's doorbell for each of `doorbells` (same index), made at the first
    /// placement and kept for the function's life.
    var acceleratedDoorbells: [AcceleratedDoorbell?] = []
    /// A doorbell the platform refused at its place (another device's, not yet moved away
    /// on another vCPU): retried with refused BARs.
    var doorbellRefused = false

    init(slot: Int, function: Int, device: PCIDevice, config: PCIConfigSpace, interrupts: PCIInterrupts,
         lock: DeviceLock, doorbells: DoorbellRegistry, cost: ActionCostMeter, id: String?) {
        self.slot = slot; self.function = function; self.device = device
        self.config = config; self.interrupts = interrupts; self.lock = lock; self.doorbells = doorbells
        self.cost = cost
        self.id = id
        self.name = "\(type(of: device).typeName)@\(slot).\(function)"
    }

    /// Hands this function's MSI/MSI-X vectors to `sink` instead of the core's own
    /// message delivery (see `MessageVectorSink`); nil restores the default.
    public func routeMessageVectors(to sink: MessageVectorSink?) {
        lock.withLock { interrupts.vectorSink = sink }
    }

    /// Config read as the guest sees it: device hook first, then the core's image.
    public func configRead(offset: Int, size: Int) -> UInt32 {
        lock.withLock { device.configRead(offset: offset, size: size) ?? config.read(offset: offset, size: size) }
    }

    public func configWrite(offset: Int, size: Int, value: UInt32) {
        lock.withLock {
            cost.begin()
            defer { cost.end() }
            if !device.configWrite(offset: offset, size: size, value: value) {
                config.write(offset: offset, size: size, value: value)
            }
            interrupts.refreshINTx()
        }
    }

    /// A BAR access as the guest makes it; MSI-X table and PBA are answered by the core.
    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        lock.withLock {
            cost.begin()
            defer { cost.end() }
            return interrupts.msixRead(bar: bar, offset: offset, size: size) ?? device.barRead(bar, offset: offset, size: size)
        }
    }

    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        lock.withLock {
            cost.begin()
            defer { cost.end() }
            if !interrupts.msixWrite(bar: bar, offset: offset, size: size, value: value) {
                device.barWrite(bar, offset: offset, size: size, value: value)
            }
        }
    }
}

/// Routes one BAR's address range to its function.
final class BARHandler: AccessHandler, @unchecked Sendable {
    unowned let function: PCIFunction
    let bar: Int
    init(function: PCIFunction, bar: Int) { self.function = function; self.bar = bar }
    func read(offset: UInt64, size: Int) -> UInt64 { function.barRead(bar, offset: offset, size: size) }
    func write(offset: UInt64, size: Int, value: UInt64) { function.barWrite(bar, offset: offset, size: size, value: value) }
}
