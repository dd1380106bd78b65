/// virtio-blk feature bits (virtio 1.2 §5.2.3; numbers as in Linux 6.1
/// include/uapi/linux/virtio_blk.h, whose `features[]` table in drivers/block/virtio_blk.c
/// lists what the driver accepts).
enum VirtioBlkFeature {
    /// `size_max`: largest single segment. Not offered: Linux then uses its own DMA limit.
    static let sizeMax: UInt64 = 1 << 1
    /// `seg_max`: data segments per request (Linux `blk_queue_max_segments`).
    static let segMax: UInt64 = 1 << 2
    static let readOnly: UInt64 = 1 << 5
    /// `blk_size`: the logical block size (Linux `blk_queue_logical_block_size`).
    static let blockSize: UInt64 = 1 << 6
    /// FLUSH requests; without CONFIG_WCE Linux then treats the cache as write-back.
    static let flush: UInt64 = 1 << 9
    /// `physical_block_exp`, `alignment_offset`, `min_io_size`, `opt_io_size`.
    static let topology: UInt64 = 1 << 10
    /// `writeback` is writable: the guest chooses write-back or write-through (sysfs cache_type).
    static let configWCE: UInt64 = 1 << 11
    /// `num_queues` request queues.
    static let multiQueue: UInt64 = 1 << 12
    static let discard: UInt64 = 1 << 13
    static let writeZeroes: UInt64 = 1 << 14
}
