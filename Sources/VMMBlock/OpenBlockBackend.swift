import Synchronization
import VMMCore

public extension DeviceEnvironment {
    /// Opens the disk named in the device's options (`disk=…`), what a block device calls
    /// in its `init`, and registers it under the device's control name for the control
    /// socket (QMP `block_resize`).
    func openBlockBackend(_ options: inout DeviceOptions) throws -> BlockBackend {
        guard let factory = services.resolve(BlockBackendFactory.self) else { throw BlockBackendFactoryError.noFactory }
        let backend = try factory.makeBackend(options: &options, eventLoop: eventLoop)
        services.resolve(BlockDisks.self)?.register(controlName, backend)
        return backend
    }
}

/// The disks of a machine by control name (`id=`, else `devN`), for the control socket.
/// Registered in the machine's `ServiceRegistry`; block devices register as they open.
public final class BlockDisks: Sendable {
    private let disks = Mutex<[(name: String, backend: BlockBackend)]>([])
    public init() {}
    public func register(_ name: String, _ backend: BlockBackend) { disks.withLock { $0.append((name, backend)) } }
    public func disk(named name: String) -> BlockBackend? { disks.withLock { d in d.first { $0.name == name }?.backend } }
    public var all: [(name: String, backend: BlockBackend)] { disks.withLock { $0 } }
}
