/// Feature bits every virtio device shares (virtio 1.2 §6 "Reserved Feature Bits").
/// Device types add their own below bit 24 (virtio-net: §5.1.3).
public enum VirtioFeature {
    /// Descriptors may point at a table of descriptors (§2.7.5.3).
    public static let indirectDescriptors: UInt64 = 1 << 28
    /// `used_event` / `avail_event` notification suppression (§2.7.10).
    public static let eventIndex: UInt64 = 1 << 29
    /// Virtio 1.x semantics (little-endian, modern transport). Mandatory here: the
    /// device is modern-only (§6: a device MUST offer it, §4.1.2.1).
    public static let version1: UInt64 = 1 << 32
    /// Packed virtqueues (§2.8) instead of split ones.
    public static let ringPacked: UInt64 = 1 << 34
    /// Bits the transport itself owns; a device model offers only its own bits plus these.
    public static let transportBits: UInt64 = indirectDescriptors | eventIndex | version1 | ringPacked

    /// `true` when `features` contains every bit of `bit`.
    @inlinable public static func has(_ features: UInt64, _ bit: UInt64) -> Bool { features & bit == bit }
}

/// The device status field (§2.1): the driver sets bits in order; only the device sets
/// DEVICE_NEEDS_RESET; writing 0 resets the device.
public struct VirtioDeviceStatus: OptionSet, Sendable, Equatable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let acknowledge = VirtioDeviceStatus(rawValue: 1)
    public static let driver = VirtioDeviceStatus(rawValue: 2)
    public static let driverOK = VirtioDeviceStatus(rawValue: 4)
    public static let featuresOK = VirtioDeviceStatus(rawValue: 8)
    public static let needsReset = VirtioDeviceStatus(rawValue: 64)
    public static let failed = VirtioDeviceStatus(rawValue: 128)
}

/// MSI-X "no vector" (§4.1.4.3): no interrupt for this queue / for config changes.
public let virtioNoVector: UInt16 = 0xFFFF
