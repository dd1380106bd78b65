import VMMCore

/// Where a block device's data lives: a raw file, an NBD export… A device (virtio-blk)
/// never knows which. Requests are asynchronous: `submit` returns at once and the
/// completion runs later on the machine's I/O loop, never on the submitting thread's
/// stack, so a slow disk never blocks a vCPU or the network.
///
/// Buffers point into guest memory and stay valid until the completion runs (the device
/// keeps the descriptor chain unreturned until then).
public protocol BlockBackend: AnyObject, Sendable {
    /// For logs and `query-block`-style reports: "file /var/disk.img", "nbd nbd://host/x".
    var description: String { get }
    var geometry: BlockGeometry { get }
    var counters: BlockCounters { get }

    /// Queues `request`; `completion` runs on the I/O loop with the result. Returns false
    /// (and never calls `completion`) when the backend's queue is full: the device retries
    /// after a later completion. Every backend bounds its queue (`BlockGeometry.queueLimit`).
    func submit(_ request: BlockRequest, completion: @escaping @Sendable (BlockResult) -> Void) -> Bool

    /// Changes the disk's size (QMP `block_resize`); the `onResize` handler hears of it
    /// and the device tells the guest.
    func resize(to bytes: UInt64) throws(BlockBackendError)

    /// Called on the I/O loop whenever the size changed: after `resize(to:)`, or by other
    /// means (an NBD server's export grew on reconnect). Set by the device.
    func onResize(_ handler: @escaping @Sendable (UInt64) -> Void)

    /// Releases files, sockets and threads; requests still queued complete with `.ioError`.
    func stop()
}

/// What the disk is: size, block size, what it can do. `size` can change (resize).
public struct BlockGeometry: Sendable, Equatable {
    public var size: UInt64
    /// The logical block size the guest should use (512 or 4096).
    public var logicalBlockSize: UInt32
    /// The physical block size (for the topology hint), a multiple of the logical one.
    public var physicalBlockSize: UInt32
    public var readOnly: Bool
    public var canFlush: Bool
    public var canDiscard: Bool
    public var canWriteZeroes: Bool
    /// Requests the backend accepts at once before `submit` returns false.
    public var queueLimit: Int

    public init(size: UInt64, logicalBlockSize: UInt32 = 512, physicalBlockSize: UInt32 = 512, readOnly: Bool = false,
                canFlush: Bool = true, canDiscard: Bool = false, canWriteZeroes: Bool = false, queueLimit: Int = 256) {
        self.size = size
        self.logicalBlockSize = logicalBlockSize
        self.physicalBlockSize = physicalBlockSize
        self.readOnly = readOnly
        self.canFlush = canFlush
        self.canDiscard = canDiscard
        self.canWriteZeroes = canWriteZeroes
        self.queueLimit = queueLimit
    }
}

/// One I/O. Offsets and lengths are in bytes; the device has already checked them
/// against the disk's size and the request's buffers.
public enum BlockRequest: @unchecked Sendable {
    case read(offset: UInt64, into: [UnsafeMutableRawBufferPointer])
    case write(offset: UInt64, from: [UnsafeRawBufferPointer])
    /// Makes completed writes durable (fdatasync, NBD_CMD_FLUSH).
    case flush
    case discard(offset: UInt64, length: UInt64)
    /// `mayUnmap`: the backend may deallocate instead of writing zeroes (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).
    case writeZeroes(offset: UInt64, length: UInt64, mayUnmap: Bool)
}

public enum BlockResult: Sendable, Equatable {
    case ok
    /// The operation failed (EIO, the server went away for too long…): the guest gets IOERR.
    case ioError(errno: Int32)
    /// The backend cannot do this kind of request: the guest gets UNSUPP.
    case unsupported
}

public enum BlockBackendError: Error, Equatable, CustomStringConvertible {
    case readOnly
    case resizeUnsupported(String)
    case system(call: String, errno: Int32)

    public var description: String {
        switch self {
        case .readOnly: "the disk is read-only"
        case let .resizeUnsupported(why): "the disk cannot be resized: \(why)"
        case let .system(call, e): "\(call) failed: errno \(e)"
        }
    }
}

/// Creates backends from a device's options (`disk=…`, `readonly=`, `direct=`), taking
/// the keys it understands. Registered in the machine's `ServiceRegistry`.
public protocol BlockBackendFactory: Sendable {
    func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop) throws -> BlockBackend
}

public enum BlockBackendFactoryError: Error, CustomStringConvertible {
    case noFactory
    public var description: String { "this machine offers no block backends" }
}
