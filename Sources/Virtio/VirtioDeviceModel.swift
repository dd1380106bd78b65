/// What a virtio device type (net, blk, rng…) supplies to `VirtioPCITransport`: its
/// feature bits, its configuration space, and what to do when the driver makes it live,
/// resets it or notifies a queue. Every call comes with the device's lock held.
public protocol VirtioDeviceModel: AnyObject {
    /// Whether the device can operate with `features` (the driver's choice, already a
    /// subset of what was offered and including VERSION_1); false refuses FEATURES_OK (§3.1.1).
    func acceptsFeatures(_ features: UInt64) -> Bool
    /// Reads `size` bytes at `offset` of the device configuration (offset + size ≤ the length given to the transport).
    func readDeviceConfig(offset: Int, size: Int) -> UInt64
    /// Writes to the device configuration (most fields are read-only; ignore those).
    func writeDeviceConfig(offset: Int, size: Int, value: UInt64)
    /// DRIVER_OK was set: queues are configured and features final (§3.1.1 step 8).
    func activate()
    /// The device was reset (status 0, or a machine reset): forget everything negotiated.
    func deviceReset()
    /// The driver notified queue `index` (an enabled queue while the device is live).
    func queueNotified(_ index: Int)
}
