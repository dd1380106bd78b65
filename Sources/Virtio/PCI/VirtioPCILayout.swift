/// Where the modern virtio-pci structures live (virtio 1.2 §4.1.4): all in one 64-bit
/// memory BAR, each in its own 4 KiB page so a driver may map them separately, with the
/// MSI-X table and PBA (emulated by the core) in the same BAR after them.
public enum VirtioPCILayout {
    /// The BAR (0 and 1, as a 64-bit BAR) holding every structure.
    public static let bar = 0
    public static let barSize: UInt64 = 0x8000
    public static let commonOffset: UInt64 = 0x0000
    /// `struct virtio_pci_common_cfg` plus the 1.2 fields `queue_notif_config_data` and
    /// `queue_reset` (§4.1.4.3): 0x3C bytes.
    public static let commonLength: UInt64 = 0x3C
    public static let isrOffset: UInt64 = 0x1000
    public static let isrLength: UInt64 = 1
    public static let deviceConfigOffset: UInt64 = 0x2000
    public static let deviceConfigMaxLength: UInt64 = 0x1000
    public static let notifyOffset: UInt64 = 0x3000
    /// Each queue's notify register is `queue_notify_off × multiplier` into the notify
    /// area (§4.1.4.4); `queue_notify_off` is the queue index, so every queue has its own
    /// address and an ioeventfd needs no data match.
    public static let notifyOffMultiplier: UInt32 = 4
    public static let msixTableOffset: UInt64 = 0x4000
    public static let msixPBAOffset: UInt64 = 0x6000
    /// Queues a transport can describe within the notify page and the MSI-X table space.
    public static let maxQueues = 256
}

/// `cfg_type` values of the vendor-specific virtio capabilities (§4.1.4).
enum VirtioPCICapabilityType: UInt8 {
    case common = 1, notify = 2, isr = 3, device = 4, pciConfigAccess = 5
}

/// Offsets in `struct virtio_pci_common_cfg` (§4.1.4.3).
enum VirtioCommonConfig {
    static let deviceFeatureSelect: UInt64 = 0x00
    static let deviceFeature: UInt64 = 0x04
    static let driverFeatureSelect: UInt64 = 0x08
    static let driverFeature: UInt64 = 0x0C
    static let configMSIXVector: UInt64 = 0x10
    static let numQueues: UInt64 = 0x12
    static let deviceStatus: UInt64 = 0x14
    static let configGeneration: UInt64 = 0x15
    static let queueSelect: UInt64 = 0x16
    static let queueSize: UInt64 = 0x18
    static let queueMSIXVector: UInt64 = 0x1A
    static let queueEnable: UInt64 = 0x1C
    static let queueNotifyOff: UInt64 = 0x1E
    static let queueDescriptor: UInt64 = 0x20
    static let queueDriver: UInt64 = 0x28
    static let queueDevice: UInt64 = 0x30
    static let queueNotifyConfigData: UInt64 = 0x38
    static let queueReset: UInt64 = 0x3A
}

/// ISR status bits (§4.1.4.5).
enum VirtioISR {
    static let queue: UInt8 = 1
    static let configChange: UInt8 = 2
}
