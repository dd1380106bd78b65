import VMMCore
import VMMNet

/// The one list of device types a machine can create (bhyve's `pci_devemu` linker set).
/// Adding a device: a folder under Devices/, a target in Package.swift, one line here.
public enum DeviceCatalog {
    public static let registry = PCIDeviceRegistry([
    ])

    /// The machine services devices may use: the network backend factory.
    public static func makeServices() -> ServiceRegistry {
        let services = ServiceRegistry()
        return services
    }
}
