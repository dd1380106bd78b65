import VMMBlock
import VMMCore

/// Turns a block device's `disk=…` options into a backend: a path is a `FileBackend`, an
/// `nbd://` or `nbd+unix://` URI an `NBDBackend`. Register it in the machine's
/// ServiceRegistry as the `BlockBackendFactory`. On any error nothing is left open.
public struct DiskBackendFactory: BlockBackendFactory {
    public init() {}

    public func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop) throws -> BlockBackend {
        try open(DiskBackendConfig.take(from: &options), eventLoop: eventLoop)
    }

    public func open(_ config: DiskBackendConfig, eventLoop: EventLoop) throws -> BlockBackend {
        switch config.kind {
        case let .file(path, direct):
            try FileBackend(path: path, readOnly: config.readOnly, direct: direct, blockSize: config.blockSize,
                            queueLimit: config.queueLimit, eventLoop: eventLoop)
        case let .nbd(uri, reconnectTimeout, requestTimeout):
            try NBDBackend(uri: uri, readOnly: config.readOnly, blockSize: config.blockSize, queueLimit: config.queueLimit,
                           reconnectTimeout: reconnectTimeout, requestTimeout: requestTimeout, eventLoop: eventLoop)
        }
    }
}
