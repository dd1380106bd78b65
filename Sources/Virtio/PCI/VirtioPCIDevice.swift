import VMMCore

/// A virtio device on the modern virtio-pci transport: the PCI function the bus sees.
/// It creates the transport, then the device with the transport as its way to the
/// queues, and forwards the function's BAR and config accesses to the transport. Catalog
/// entries name it with the device type: `VirtioPCIDevice<VirtioNet>.self`.
public final class VirtioPCIDevice<Device: VirtioDevice>: PCIDevice, @unchecked Sendable {
    public static var typeName: String { Device.typeName }
    public static var summary: String { Device.summary }
    public static var optionHelp: [OptionHelp] { Device.optionHelp }

    public let transport: VirtioPCITransport
    public let device: Device

    public required init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        let transport = VirtioPCITransport(context: context)
        device = try Device(options: &options, context: VirtioDeviceContext(environment: context, transport: transport))
        transport.attach(device, identity: VirtioPCIIdentity(deviceType: Device.deviceID, classCode: Device.pciClassCode))
        self.transport = transport
    }

    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 { transport.barRead(bar, offset: offset, size: size) }
    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        transport.barWrite(bar, offset: offset, size: size, value: value)
    }
    public func configRead(offset: Int, size: Int) -> UInt32? { transport.configRead(offset: offset, size: size) }
    public func configWrite(offset: Int, size: Int, value: UInt32) -> Bool {
        transport.configWrite(offset: offset, size: size, value: value)
    }
    public func reset() { transport.reset() }
    public func shutdown() { device.shutdown() }
}

/// The virtio device's counts, if it keeps any.
extension VirtioPCIDevice: DeviceCounters {
    public var counters: [(name: String, value: UInt64)] { (device as? DeviceCounters)?.counters ?? [] }
}
