import BlockBackends
import E1000
import NetBackends
import VirtioBlk
import VirtioConsole
import VirtioNet
import VirtioRng
import VMMBlock
import VMMCore
import VMMNet

/// The one list of device types a machine can create (bhyve's `pci_devemu` linker set).
/// Adding a device: a folder under Devices/, a target in Package.swift, one line here.
public enum DeviceCatalog {
    public static let registry = PCIDeviceRegistry([
        E1000Device.self,
        VirtioNetDevice.self,
        VirtioBlkDevice.self,
        VirtioRngDevice.self,
        VirtioConsoleDevice.self,
    ])

    /// The machine services devices may use: the backend factories and the registries the
    /// control socket reaches NICs and disks through.
    public static func makeServices() -> ServiceRegistry {
        let services = ServiceRegistry()
        let passed = PassedFileDescriptors()
        services.register(PassedFileDescriptors.self, passed)
        let start = MachineStart()
        services.register(MachineStart.self, start)
        services.register(NetworkBackendFactory.self, NetBackendFactory(passedDescriptors: passed, machineStart: start))
        services.register(NetworkLinks.self, NetworkLinks())
        services.register(BlockBackendFactory.self, DiskBackendFactory())
        services.register(BlockDisks.self, BlockDisks())
        return services
    }
}
