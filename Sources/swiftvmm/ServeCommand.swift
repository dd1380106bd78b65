#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import DeviceCatalog
import Logging
import QMP
import Sandbox
import VFIOUser
import VMMCore

/// `swiftvmm serve`: each --device is served over vfio-user on the --socket of the same
/// position, to QEMU (`-device vfio-user-pci`) or another vfio-user client. Runs until
/// SIGINT/SIGTERM, then exits 0 with the sockets removed and the backends closed.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve devices to another VMM over vfio-user (one device per unix socket).",
        discussion: """
        Example:
          swiftvmm serve --socket /tmp/e1000.sock --device e1000,net=user,mac=52:54:00:12:34:56
          qemu-system-x86_64 -machine pc,accel=tcg,memory-backend=mem -m 512 \\
            -object memory-backend-memfd,id=mem,size=512M,share=on \\
            -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/tmp/e1000.sock"}}' ...
        Guest RAM must be shared memfd memory (sealed, QEMU's default) so the device can reach it.
        """)

    @Option(name: .customLong("socket"), help: "Unix socket path to serve the --device of the same position on. Repeatable.")
    var sockets: [String] = []

    @Option(name: .customLong("device"), help: "A PCI device: NAME[,key=value...] (see `swiftvmm devices`). Repeatable.")
    var devices: [String] = []

    @Option(help: "QMP control socket: unix:PATH[,server=on][,wait=off] (see Docs/qmp.md).")
    var qmp: String?

    @Option(help: "Log level on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"

    @Option(help: SandboxArgument.help)
    var sandbox: Sandbox.Mode = .on

    @Option(help: SandboxArgument.runAsHelp)
    var runas: String?

    func run() throws {
        // Stop signals are taken by sigwait below, never by a worker thread.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        signal(SIGPIPE, SIG_IGN)

        guard let level = Logger.Level(rawValue: logLevel) else {
            throw reportUserError("--log-level '\(logLevel)': expected trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        guard !devices.isEmpty else { throw reportUserError("--device is required (e.g. --device e1000,net=user)") }
        let runAs: RunAs?
        do {
            runAs = try SandboxArgument.runAs(runas)
            try SandboxArgument.activate(sandbox, runAs: runAs)
        } catch { throw reportUserError(error.description) }
        guard sockets.count == devices.count else {
            throw reportUserError("--socket: \(sockets.count) given for \(devices.count) --device; give one socket per device")
        }
        if let twice = sockets.first(where: { s in sockets.filter { $0 == s }.count > 1 }) {
            throw reportUserError("--socket '\(twice)' is given twice")
        }
        let logger = Logger(label: "swiftvmm.serve")
        let loop: EPollEventLoop
        do { loop = try EPollEventLoop() } catch { throw reportUserError("event loop: \(error)") }
        let services = DeviceCatalog.makeServices()

        // Devices first, then sockets: a bad option leaves no socket file behind.
        var served: [ServedDevice] = []
        var servers: [VFIOUserServer] = []
        var control: QMPServer?
        func releaseAll() {
            control?.stop()
            for s in servers { s.stop() }
            for d in served { d.shutdown() }
            loop.stop()
        }
        // Each served device has a bus of its own, where an id is unique anyway; QMP
        // names them across the process, so they must be unique here (as `run` requires).
        var ids: Set<String> = []
        var listening = sockets.map { OutputFiles.Named(owner: "--socket", path: $0) }
        if let qmp, let path = try? QMPSocketOption.parse(qmp) { listening.append(.init(owner: "--qmp", path: path)) }
        do { try OutputFiles.refuseShared(devices: devices, listening: listening) } catch {
            releaseAll()
            throw reportUserError(error.description)
        }
        for text in devices {
            do {
                let spec = try DeviceSpec.parse(text)
                if let id = spec.options.pairs.last(where: { $0.key == "id" })?.value, !ids.insert(id).inserted {
                    throw OptionError.badValue(key: "id", value: id, reason: "another device already has this id")
                }
                _ = try DeviceCatalog.registry.lookup(spec.name)
                served.append(try ServedDevice(spec: spec, registry: DeviceCatalog.registry, services: services,
                                               loop: loop, logger: Logger(label: "swiftvmm.\(spec.name)"),
                                               instanceIndex: served.count))
            } catch {
                releaseAll()
                throw reportUserError("--device '\(text)': \(error)")
            }
        }
        for (path, device) in zip(sockets, served) {
            do {
                let listener = try UnixSocketListener(path: path)
                servers.append(try VFIOUserServer(device: device, listener: listener, logger: logger))
            } catch {
                releaseAll()
                throw reportUserError("--socket '\(path)': \(error)")
            }
        }
        do {
            control = try ControlSocket.open(qmp, target: ServeControl(devices: served), services: services)
        } catch {
            releaseAll()
            throw reportUserError(error.description)
        }
        if let runAs {
            runAs.handOver(servers.map(\.listener.path) + (control.flatMap(\.socketPath).map { [$0] } ?? []), devices: devices)
            do { try runAs.drop() } catch {
                releaseAll()
                throw reportUserError("--runas \(runAs.user): \(error)")
            }
        }
        ResourceLimits.limitDescriptors()
        services.resolve(MachineStart.self)?.start()   // the command line is accepted
        loop.startThread(name: "io-loop")
        for s in servers {
            s.start()
            logger.notice("serving \(s.device.name) on \(s.listener.path)")
        }
        // Set up: this thread only waits for a stop signal and tears down.
        ThreadConfinement.enter(.main)
        var received: Int32 = 0
        sigwait(&stopSignals, &received)
        logger.notice("signal \(received): stopping")
        control?.emit("SHUTDOWN", data: .object([("guest", .bool(false)), ("reason", .string("host-signal"))]))
        releaseAll()
    }
}
