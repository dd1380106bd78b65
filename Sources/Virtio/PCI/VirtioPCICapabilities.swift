import VMMCore

extension PCIConfigSpace {
    /// Adds one `struct virtio_pci_cap` (virtio 1.2 §4.1.4): vendor-specific capability
    /// 0x09 with cap_len, cfg_type, bar, id, padding, offset, length, then `extra` bytes
    /// (notify_off_multiplier for the notify capability). Returns its config offset.
    @discardableResult
    func addVirtioCapability(_ type: VirtioPCICapabilityType, bar: Int, offset: UInt64, length: UInt64,
                             extra: [UInt8] = [], writeMask: [UInt8]? = nil) -> Int? {
        var body: [UInt8] = [UInt8(16 + extra.count), type.rawValue, UInt8(bar), 0, 0, 0]
        for v in [UInt32(truncatingIfNeeded: offset), UInt32(truncatingIfNeeded: length)] {
            for i in 0 ..< 4 { body.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
        }
        body += extra
        return addCapability(id: 0x09, body: body, writeMask: writeMask)
    }
}

/// The VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9): the driver writes bar/offset/length into
/// the capability and then reads or writes `pci_cfg_data`, which the device turns into an
/// access to that BAR. Lets firmware without MMIO mappings reach the structures.
struct VirtioPCIConfigWindow {
    /// Config-space offset of the capability.
    let capability: Int
    var dataRange: Range<Int> { capability + 16 ..< capability + 20 }

    /// Bytes of the capability body the driver may write: bar, offset, length, data.
    static let writeMask: [UInt8] = [0, 0, 0xFF, 0, 0, 0] + [UInt8](repeating: 0xFF, count: 12)

    /// The BAR access the capability currently describes, if it is well-formed
    /// (length 1, 2 or 4, offset aligned to it, §4.1.4.9.1).
    func target(in config: PCIConfigSpace) -> (bar: Int, offset: UInt64, size: Int)? {
        let bar = Int(config.read(offset: capability + 4, size: 1))
        let offset = UInt64(config.read(offset: capability + 8, size: 4))
        let length = Int(config.read(offset: capability + 12, size: 4))
        guard [1, 2, 4].contains(length), offset % UInt64(length) == 0 else { return nil }
        return (bar, offset, length)
    }
}
