#if canImport(Glibc)
import Glibc
#endif
import KVM
import Logging
import QMP
import VFIOUser
import VMMBlock
import VMMCore
import VMMNet

/// `--qmp unix:PATH,server=on,wait=off`: opens the control socket before the VM runs.
enum ControlSocket {
    static func open(_ option: String?, target: QMPTarget, services: ServiceRegistry) throws(UserInputError) -> QMPServer? {
        guard let option else { return nil }
        do {
            let path = try QMPSocketOption.parse(option)
            let listener: UnixSocketListener
            do { listener = try UnixSocketListener(path: path) } catch { throw QMPError.generic("\(error)") }
            let server = try QMPServer(listener: listener, target: target, links: services.resolve(NetworkLinks.self),
                                       disks: services.resolve(BlockDisks.self),
                                       descriptors: services.resolve(PassedFileDescriptors.self),
                                       logger: Logger(label: "swiftvmm.qmp"))
            server.start()
            return server
        } catch {
            throw UserInputError("--qmp '\(option)': \(error)")
        }
    }
}

/// The KVM VM as QMP sees it.
final class MachineControl: QMPTarget, @unchecked Sendable {
    let machine: Machine
    let name: String?
    init(machine: Machine, name: String?) { self.machine = machine; self.name = name }
    var pciFunctions: [PCIFunction] { machine.bus.functions }
    var hasVCPUs: Bool { true }
    var vcpuCount: Int { machine.cpuCount }
    var isRunning: Bool { !machine.isPaused }
    func pause() { machine.pause() }
    func resume() { machine.resume() }
    /// A reset ends a swiftvmm VM, as a guest reset does (QEMU's -no-reboot).
    func reset() { machine.stop(.controlRequest("system_reset")) }
    var resetEndsMachine: Bool { true }
    func quit() { machine.stop(.controlRequest("quit")) }
}

/// The vfio-user server's devices as QMP sees them (no vCPUs: the client VMM has them).
final class ServeControl: QMPTarget, @unchecked Sendable {
    let devices: [ServedDevice]
    init(devices: [ServedDevice]) { self.devices = devices }
    var name: String? { nil }
    var pciFunctions: [PCIFunction] { devices.map(\.function) }
    var hasVCPUs: Bool { false }
    var vcpuCount: Int { 0 }
    var isRunning: Bool { true }
    func pause() {}
    func resume() {}
    func reset() { for d in devices { d.resetDevice() } }
    var resetEndsMachine: Bool { false }
    /// Ends `serve` the way SIGTERM does: sockets removed, backends closed, status 0.
    func quit() { kill(getpid(), SIGTERM) }
}
