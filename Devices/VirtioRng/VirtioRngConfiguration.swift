import Virtio
import VMMCore

/// The user's choices for one virtio-rng device (`--device virtio-rng,max-bytes=…,period=…`):
/// QEMU's rate limit (hw/virtio/virtio-rng.c `max-bytes` and `period`, the same names and
/// meaning: at most max-bytes in each period of that many milliseconds), the queue size
/// and the ring options every virtio device takes.
struct VirtioRngConfiguration {
    /// Bytes the guest may take per period; nil: no limit (QEMU's default is INT64_MAX).
    var maxBytes: UInt64?
    /// The period in milliseconds (QEMU's default, 1 << 16).
    var periodMilliseconds: UInt32 = 1 << 16
    /// QEMU's `virtio_add_queue(vdev, 8, …)`; Linux keeps one 64-byte buffer posted.
    var queueSize: UInt16 = 8
    var ring = VirtioRingOptions()

    static let help: [OptionHelp] = [
        OptionHelp("max-bytes", "N", "at most N bytes of entropy per period (default: no limit)"),
        OptionHelp("period", "MS", "the rate limit's period in milliseconds, 1-3600000 (default 65536)"),
        OptionHelp("queue-size", "2-1024", "entries in the request queue, a power of two (default 8)"),
    ] + VirtioRingOptions.help

    init(options: inout DeviceOptions) throws(OptionError) {
        if let n = try options.takeInteger("max-bytes", in: UInt64(1) ... UInt64(Int64.max)) { maxBytes = n }
        if let p = try options.takeInteger("period", in: UInt32(1) ... UInt32(3_600_000)) { periodMilliseconds = p }
        if let v = try options.takeInteger("queue-size", in: UInt16(2) ... UInt16(1024)) {
            guard v.nonzeroBitCount == 1 else {
                throw .badValue(key: "queue-size", value: String(v), reason: "must be a power of two (virtio 1.2 §2.7)")
            }
            queueSize = v
        }
        ring = try VirtioRingOptions(options: &options)
    }
}
