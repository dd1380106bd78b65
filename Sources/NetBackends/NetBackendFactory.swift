#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import VMMNet

/// Turns a device's `net=…` options into a backend, wrapped in the filters asked for:
/// device ⇄ faults ⇄ capture ⇄ backend. Register it in the machine's ServiceRegistry as
/// the `NetworkBackendFactory`. On any error nothing is left open.
public struct NetBackendFactory: NetworkBackendFactory {
    /// Descriptors handed over by name (QMP `getfd`) that `tap-fd:`/`stream-fd:` may use.
    public let passedDescriptors: PassedFileDescriptors?
    /// When a `capture=` file is emptied: at the machine's start (nil: at once).
    public let machineStart: MachineStart?

    public init(passedDescriptors: PassedFileDescriptors? = nil, machineStart: MachineStart? = nil) {
        self.passedDescriptors = passedDescriptors
        self.machineStart = machineStart
    }

    public func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        try open(NetBackendConfig.take(from: &options), eventLoop: eventLoop, clock: clock)
    }

    public func open(_ config: NetBackendConfig, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        // A sandboxed thread (a live swap over QMP) may not open devices, paths or sockets:
        // it takes a descriptor the client passed with getfd (Docs/security.md).
        if ThreadConfinement.currentThreadIsConfined {
            switch config.kind {
            case .tapDescriptor, .streamDescriptor: break
            default:
                throw NetBackendError.badValue(option: "net", value: config.kind.name,
                                               reason: "with the sandbox on, a running VM takes an open descriptor: pass it with QMP getfd and use net=tap-fd:NAME or net=stream-fd:NAME (or run with --sandbox=off)")
            }
            if config.capturePath != nil {
                throw NetBackendError.badValue(option: "capture", value: config.capturePath ?? "",
                                               reason: "with the sandbox on, start a capture with x-swiftvmm-capture-start instead")
            }
        }
        if case let .vde(url) = config.kind, ThreadConfinement.isEnforcing, let plugin = VDEBackend.sandboxUnsafePlugin(url) {
            throw NetBackendError.badValue(option: "net", value: "vde:\(url)",
                                           reason: "libvdeplug's \(plugin) plugin makes calls the sandbox does not allow (\(VDEBackend.sandboxUnsafeWhy(plugin))); run with --sandbox off, or connect to a vde_switch (vde:///PATH)")
        }
        var backend: NetworkBackend
        switch config.kind {
        case let .tap(name): backend = try TapBackend(interface: name, eventLoop: eventLoop)
        case let .tapDescriptor(reference):
            backend = try TapBackend(adopting: try descriptor(reference, "tap-fd"), label: reference, eventLoop: eventLoop)
        case let .streamDescriptor(reference):
            backend = try StreamBackend(adopting: try descriptor(reference, "stream-fd"), label: reference, eventLoop: eventLoop, clock: clock)
        case let .vde(url): backend = try VDEBackend(url: url, eventLoop: eventLoop, clock: clock)
        case let .user(user): backend = try UserBackend(config: user, eventLoop: eventLoop, clock: clock)
        case let .stream(stream): backend = try StreamBackend(config: stream, eventLoop: eventLoop, clock: clock)
        }
        if let path = config.capturePath {
            do { backend = try CaptureFilter(wrapping: backend, path: path, machineStart: machineStart) } catch {
                backend.stop()
                throw error
            }
        }
        if let faults = config.faults, faults.isActive {
            backend = FaultFilter(wrapping: backend, config: faults, eventLoop: eventLoop, clock: clock)
        }
        return backend
    }

    /// A descriptor number inherited from the parent, or one passed over QMP by name.
    private func descriptor(_ reference: String, _ kind: String) throws(NetBackendError) -> Int32 {
        if reference.allSatisfy(\.isNumber) {
            guard let fd = Int32(reference) else {
                throw .badValue(option: "net", value: "\(kind):\(reference)", reason: "not a descriptor number")
            }
            guard PassedFileDescriptors.takeInherited(fd) else {
                let reason = fcntl(fd, F_GETFD) < 0 ? "file descriptor \(fd) is not open"
                    : "file descriptor \(fd) was not passed to swiftvmm when it started, or another device already took it"
                throw .badValue(option: "net", value: "\(kind):\(reference)", reason: reason)
            }
            return fd
        }
        guard let fd = passedDescriptors?.take(reference) else {
            throw .badValue(option: "net", value: "\(kind):\(reference)",
                            reason: "no descriptor named '\(reference)' (pass one over the control socket with QMP getfd)")
        }
        return fd
    }
}
