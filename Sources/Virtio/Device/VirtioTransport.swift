/// The transport as a device sees it: its queues, what was negotiated, and the
/// interrupts it may send (Firecracker's queues + `VirtioInterrupt`). Implemented by
/// `VirtioPCITransport`; a device reaches it through `VirtioDeviceContext.transport`.
/// Every call with the device's lock held.
public protocol VirtioTransport: AnyObject {
    /// Features the driver accepted; valid once the device is live.
    var negotiatedFeatures: UInt64 { get }
    /// DRIVER_OK is set, the device is neither broken nor failed, and it may reach memory
    /// (bus mastering, PCI 3.0 §6.2.2): queues may be used.
    var isLive: Bool { get }
    /// Queue `index` as the driver enabled it (split or packed); nil when it is not enabled.
    func queue(_ index: Int) -> (any Virtqueue)?
    /// Runs `body` with queue `index` (as `queue` finds it) without taking a reference to
    /// it, for paths that look a queue up per frame; nil when it is not enabled. `body`
    /// must not reset the transport. The caller's mutable state goes through `state`:
    /// captured by `body` instead, its variables were boxed on the heap on every call.
    func withQueue<State, R>(_ index: Int, _ state: inout State, _ body: (any Virtqueue, inout State) -> R) -> R?
    /// Publishes what was added to `queue`'s used ring and interrupts the driver if it
    /// asked for it (§2.7.10). The one call devices make after returning buffers.
    func completeUsed(_ queue: any Virtqueue)
    /// The device configuration changed (link status, capacity…): bump the generation
    /// (§4.1.4.3.1) and, once the driver runs, send a configuration change notification.
    func configurationChanged()
    /// The driver broke the ring rules: DEVICE_NEEDS_RESET (§2.1.1); queues stop until
    /// the driver resets the device.
    func fail(_ queue: (any Virtqueue)?, _ error: VirtqueueError)
}

public extension VirtioTransport {
    func negotiated(_ bit: UInt64) -> Bool { VirtioFeature.has(negotiatedFeatures, bit) }
}
