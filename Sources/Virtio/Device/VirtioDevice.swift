import VMMCore

/// A virtio device type (net, blk, …) as the transport sees it — the whole of what a
/// device author writes (Firecracker's `VirtioDevice` trait, rust-vmm's `VirtioDevice`):
/// its identity and feature bits, its configuration structure, its queues' count and
/// sizes, and what to do when the driver makes it live, resets it or notifies a queue.
/// It never sees a BAR, a capability or an MSI-X table: `VirtioPCIDevice` is the PCI
/// function and owns it. Every call comes with the device's lock held.
public protocol VirtioDevice: AnyObject {
    /// What a user types in a device list (`virtio-net`), as `PCIDevice.typeName`.
    static var typeName: String { get }
    /// One line for `swiftvmm devices`.
    static var summary: String { get }
    /// The options `init` understands (for help).
    static var optionHelp: [OptionHelp] { get }
    /// The virtio device ID (§5: 1 net, 2 block…) and the PCI class code it shows.
    static var deviceID: UInt16 { get }
    static var pciClassCode: UInt32 { get }

    /// Creates the device from its options (take what you understand; throw
    /// `OptionError` for bad values). `context.transport` is how it reaches its queues.
    init(options: inout DeviceOptions, context: VirtioDeviceContext) throws

    /// Queues, feature bits and configuration size; read once, after `init`.
    var layout: VirtioDeviceLayout { get }

    /// Whether the device can operate with `features` (the driver's choice, already a
    /// subset of what was offered and including VERSION_1); false refuses FEATURES_OK (§3.1.1).
    func acceptsFeatures(_ features: UInt64) -> Bool
    /// Reads `size` bytes at `offset` of the device configuration (within `layout.configLength`).
    func readConfig(offset: Int, size: Int) -> UInt64
    /// Writes to the device configuration (most fields are read-only; ignore those).
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// DRIVER_OK was set: queues are configured and features final (§3.1.1 step 8).
    func activate()
    /// The device was reset (status 0, or a machine reset): forget everything negotiated.
    func reset()
    /// The driver notified queue `index` (an enabled queue while the device is live).
    func queueNotified(_ index: Int)
    /// The VM is going away: release backends, file descriptors, timers.
    func shutdown()
    /// Work from before a reset is still using guest buffers (a block request a backend
    /// has not finished). While it is, the transport reports a non-zero device status
    /// after the driver wrote 0, and the driver waits (virtio 1.2 §4.1.4.3.2: it must
    /// read 0 before reinitializing) instead of reusing those buffers. Default: false.
    var isDraining: Bool { get }
}

extension VirtioDevice {
    public var isDraining: Bool { false }
}

/// The shape of a virtio device: fixed when it is created.
public struct VirtioDeviceLayout: Sendable {
    /// Device-type feature bits offered (the transport adds VERSION_1 and ring features).
    public var features: UInt64
    /// Size of the device configuration structure in bytes.
    public var configLength: Int
    public var queueCount: Int
    /// The largest size of each queue: a power of two ≤ 32768 (§2.7).
    public var maxQueueSize: UInt16
    public var ring: VirtioRingOptions

    public init(features: UInt64, configLength: Int, queueCount: Int, maxQueueSize: UInt16,
                ring: VirtioRingOptions = VirtioRingOptions()) {
        self.features = features
        self.configLength = configLength
        self.queueCount = queueCount
        self.maxQueueSize = maxQueueSize
        self.ring = ring
    }
}

/// Ring features a user may switch (`event_idx=off`, `indirect_desc=off`, `packed=on`).
public struct VirtioRingOptions: Sendable, Equatable {
    public var eventIndex = true
    public var indirectDescriptors = true
    /// Offer VIRTIO_F_RING_PACKED (off by default, as in QEMU: split rings are what every
    /// driver supports and what is tested most).
    public var packedRing = false
    public init(eventIndex: Bool = true, indirectDescriptors: Bool = true, packedRing: Bool = false) {
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.packedRing = packedRing
    }

    /// The options every virtio device takes: `event_idx=`, `indirect_desc=`, `packed=`.
    public init(options: inout DeviceOptions) throws(OptionError) {
        eventIndex = try options.takeBool("event_idx") ?? true
        indirectDescriptors = try options.takeBool("indirect_desc") ?? true
        packedRing = try options.takeBool("packed") ?? false
    }

    public static let help: [OptionHelp] = [
        OptionHelp("event_idx", "on|off", "notification suppression (VIRTIO_F_EVENT_IDX)"),
        OptionHelp("indirect_desc", "on|off", "indirect descriptor tables (VIRTIO_F_INDIRECT_DESC)"),
        OptionHelp("packed", "on|off", "offer packed virtqueues (VIRTIO_F_RING_PACKED; default off)"),
    ]
}
