import VMMCore
import VMMNet

/// Turns a device's `net=…` options into a backend, wrapped in the filters asked for:
/// device ⇄ faults ⇄ capture ⇄ backend. Register it in the machine's ServiceRegistry as
/// the `NetworkBackendFactory`. On any error nothing is left open.
public struct NetBackendFactory: NetworkBackendFactory {
    public init() {}

    public func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        try open(NetBackendConfig.take(from: &options), eventLoop: eventLoop, clock: clock)
    }

    public func open(_ config: NetBackendConfig, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        var backend: NetworkBackend
        switch config.kind {
        case let .tap(name): backend = try TapBackend(interface: name, eventLoop: eventLoop)
        case let .vde(url): backend = try VDEBackend(url: url, eventLoop: eventLoop, clock: clock)
        case let .user(user): backend = try UserBackend(config: user, eventLoop: eventLoop, clock: clock)
        case let .stream(stream): backend = try StreamBackend(config: stream, eventLoop: eventLoop, clock: clock)
        }
        if let path = config.capturePath {
            do { backend = try CaptureFilter(wrapping: backend, path: path) } catch {
                backend.stop()
                throw error
            }
        }
        if let faults = config.faults, faults.isActive {
            backend = FaultFilter(wrapping: backend, config: faults, eventLoop: eventLoop, clock: clock)
        }
        return backend
    }
}
