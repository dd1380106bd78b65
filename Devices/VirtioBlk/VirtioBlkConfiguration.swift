import Virtio
import VMMCore

/// The user's choices for one virtio-blk device (`--device virtio-blk,disk=…,serial=…`);
/// the block backend factory takes `disk=`, `readonly=` and its own keys.
struct VirtioBlkConfiguration {
    var serial: String
    var queueCount = 1
    var queueSize: UInt16 = 256
    /// The write cache the guest starts with: write-back (flushes make writes durable) or
    /// write-through (every write is flushed before it completes).
    var writeback = true
    var ring = VirtioRingOptions()

    static let help: [OptionHelp] = [
        OptionHelp("disk", "…", "the disk (required): a file, block device or NBD export; see `swiftvmm backends`"),
        OptionHelp("serial", "TEXT", "the disk's ID (GET_ID, Linux's /sys/block/vdX/serial), at most 20 bytes"),
        OptionHelp("num-queues", "1-16", "request queues (VIRTIO_BLK_F_MQ when > 1; default 1)"),
        OptionHelp("queue-size", "16-1024", "entries per virtqueue, a power of two (default 256)"),
        OptionHelp("cache", "writeback|writethrough", "the write cache the guest starts with (it may change it: VIRTIO_BLK_F_CONFIG_WCE)"),
    ] + VirtioRingOptions.help

    init(options: inout DeviceOptions, instanceIndex: Int) throws(OptionError) {
        serial = try options.take("serial") ?? "swiftvmm-disk\(instanceIndex)"
        guard serial.utf8.count <= virtioBlkIDBytes else {
            throw .badValue(key: "serial", value: serial, reason: "at most \(virtioBlkIDBytes) bytes (VIRTIO_BLK_ID_BYTES)")
        }
        if let n = try options.takeInteger("num-queues", in: 1 ... 16) { queueCount = n }
        if let v = try options.takeInteger("queue-size", in: UInt16(16) ... UInt16(1024)) {
            guard v.nonzeroBitCount == 1 else {
                throw .badValue(key: "queue-size", value: String(v), reason: "must be a power of two (virtio 1.2 §2.7)")
            }
            queueSize = v
        }
        if let c = try options.take("cache") {
            switch c {
            case "writeback": writeback = true
            case "writethrough": writeback = false
            default: throw .badValue(key: "cache", value: c, reason: "expected writeback or writethrough")
            }
        }
        ring = try VirtioRingOptions(options: &options)
    }
}
