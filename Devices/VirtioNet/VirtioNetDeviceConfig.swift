import VMMCore

/// `struct virtio_net_config` (virtio 1.2 §5.1.4) up to `mtu`: mac[6], status, max
/// virtqueue pairs, mtu. Speed/duplex and RSS fields are not offered, so not present.
struct VirtioNetDeviceConfig {
    static let length = 12
    static let linkUp: UInt16 = 1 // VIRTIO_NET_S_LINK_UP

    var mac: MACAddress
    var status: UInt16
    var maxQueuePairs: UInt16
    var mtu: UInt16

    /// Little-endian bytes of the structure, read at any offset and width.
    func read(offset: Int, size: Int) -> UInt64 {
        var bytes = mac.array
        for v in [status, maxQueuePairs, mtu] {
            bytes.append(UInt8(truncatingIfNeeded: v)); bytes.append(UInt8(truncatingIfNeeded: v >> 8))
        }
        var value: UInt64 = 0
        for i in 0 ..< size where offset + i >= 0 && offset + i < bytes.count {
            value |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        return value
    }
}
