/// Maps device-type names to types: bhyve's `pci_emul_finddev`.
public struct PCIDeviceRegistry: Sendable {
    public let types: [any PCIDevice.Type]

    public init(_ types: [any PCIDevice.Type]) { self.types = types }

    public func lookup(_ name: String) throws(OptionError) -> any PCIDevice.Type {
        guard let t = types.first(where: { $0.typeName == name }) else {
            throw .unknownDevice(name, known: types.map { $0.typeName })
        }
        return t
    }
}
