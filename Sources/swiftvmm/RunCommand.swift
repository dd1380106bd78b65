#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import DeviceCatalog
import KVM
import Logging
import QMP
import Sandbox
import VMMCore

/// `swiftvmm run`: the process is the VM. Exit status 0 when the guest resets or powers
/// off, 128+N after signal N, 1 on a guest crash (register dump on stderr), 2 on bad input.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Boot a kernel on KVM with a list of devices.",
        discussion: """
        Examples:
          swiftvmm run --kernel vmlinux --initrd initrd.cpio.gz --cmdline "console=ttyS0 acpi=off reboot=k" \\
                       --device virtio-net,net=user,hostfwd=tcp:127.0.0.1:2222-:22
          swiftvmm run --kernel vmlinux -s 2:0,virtio-net,net=tap:tap0 -s 3,e1000,net=vde:/tmp/sw.ctl
        """)

    @Option(help: "Kernel: an ELF with a PVH entry note (Linux vmlinux) or a bzImage.")
    var kernel: String?

    @Option(help: "Initial ramdisk.")
    var initrd: String?

    @Option(help: "Kernel command line.")
    var cmdline: String = "console=ttyS0 acpi=off reboot=k"

    // `.unconditional`: `--memory -1` is a bad size, not a missing value.
    @Option(parsing: .unconditional, help: "Guest RAM, e.g. 512M or 2G.")
    var memory: String = "512M"

    @Option(parsing: .unconditional, help: "Number of vCPUs.")
    var cpus: Int = 1

    @Option(name: .customLong("device"), help: "A PCI device: NAME[,key=value...] (see `swiftvmm devices`). Repeatable.")
    var devices: [String] = []

    @Option(name: .customShort("s"), help: "bhyve/hyperkit slot syntax: SLOT[:FUNCTION],NAME[,key=value...]. Repeatable.")
    var slots: [String] = []

    @Option(help: "COM1: stdio (on a terminal: raw mode, Ctrl-A x quits), file:PATH or none.")
    var serial: String = "stdio"

    @Option(help: "QMP control socket: unix:PATH[,server=on][,wait=off] (see Docs/qmp.md).")
    var qmp: String?

    @Option(help: "A name for the VM (QMP's query-name).")
    var name: String?

    @Option(help: "Log level on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"

    @Option(help: SandboxArgument.help)
    var sandbox: Sandbox.Mode = .on

    @Option(help: SandboxArgument.runAsHelp)
    var runas: String?

    func run() throws {
        let start = MonotonicTime.nanoseconds()
        Machine.blockStopSignals()
        // A console reader that goes away (`swiftvmm run | head`) ends the guest's output,
        // not the VMM, as in QEMU (os_setup_signal_handling ignores SIGPIPE).
        signal(SIGPIPE, SIG_IGN)
        let runAs: RunAs?
        do {
            runAs = try SandboxArgument.runAs(runas)
            try SandboxArgument.activate(sandbox, runAs: runAs)
        } catch { throw reportUserError(error.description) }
        let configuration: MachineConfiguration
        do {
            configuration = try makeConfiguration(start: start)
        } catch {
            throw reportUserError(error.description)
        }
        let logger = Logger(label: "swiftvmm")
        let machine: Machine
        let services = DeviceCatalog.makeServices()
        do {
            machine = try Machine(configuration: configuration, registry: DeviceCatalog.registry,
                                  services: services, logger: logger)
        } catch {
            throw reportUserError(error.description)
        }
        let control: QMPServer?
        do {
            control = try ControlSocket.open(qmp, target: MachineControl(machine: machine, name: name), services: services)
        } catch {
            machine.bus.shutdown()
            throw reportUserError(error.description)
        }
        if let runAs {
            runAs.handOver(control.flatMap(\.socketPath).map { [$0] } ?? [], devices: devices)
            do { try runAs.drop() } catch {
                control?.stop()
                machine.bus.shutdown()
                throw reportUserError("--runas \(runAs.user): \(error)")
            }
        }
        ResourceLimits.limitDescriptors()
        services.resolve(MachineStart.self)?.start()   // the command line is accepted
        let terminal = configuration.serial == .stdio ? TerminalRawMode() : nil
        let exit = machine.run()
        terminal?.restore()
        if let control {
            let guest: Bool = switch exit { case .reset, .powerOff, .halted: true; default: false }
            let reason: String = switch exit {
            case .reset: "guest-reset"
            case .powerOff: "guest-shutdown"
            case .signal: "host-signal"
            case let .controlRequest(what): what == "quit" ? "host-qmp-quit" : "host-qmp-system-reset"
            default: "guest-panic"
            }
            control.emit("SHUTDOWN", data: .object([("guest", .bool(guest)), ("reason", .string(reason))]))
            control.stop()
        }
        if exit.exitStatus == 0 {
            logger.info("\(exit)")
        } else if case .signal = exit {
            logger.notice("\(exit)")
        } else {
            logger.critical("\(exit)")
        }
        throw ExitCode(exit.exitStatus)
    }

    private func makeConfiguration(start: UInt64) throws(UserInputError) -> MachineConfiguration {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw UserInputError("--log-level '\(logLevel)': expected trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        guard let kernel else { throw UserInputError("--kernel is required (a PVH ELF such as vmlinux, or a bzImage)") }
        // What the command line says on its own first, then the files it names; the memory
        // size before those: a kernel or initrd larger than it is refused unread.
        let size = try MemorySize.parseGuestRAM(memory)
        guard (1 ... Machine.maximumCPUs).contains(cpus) else {
            throw UserInputError("--cpus \(cpus) is out of range (1 to \(Machine.maximumCPUs))")
        }
        let attachment: SerialAttachment
        switch serial {
        case "stdio": attachment = .stdio
        case "none": attachment = .none
        case let s where s.hasPrefix("file:") && s.count > 5: attachment = .file(String(s.dropFirst(5)))
        default: throw UserInputError("--serial '\(serial)': expected stdio, file:PATH or none")
        }
        let requests = try DeviceArguments.requests(devices: devices, slots: slots, registry: DeviceCatalog.registry)
        let specs = requests.map { (text: $0.text, spec: $0.spec) }
        var outputs = OutputFiles.captures(specs) + OutputFiles.streamListeners(specs) + OutputFiles.consoles(specs)
        if case let .file(path) = attachment { outputs.insert(.init(owner: "--serial", path: path), at: 0) }
        if let qmp, let path = try? QMPSocketOption.parse(qmp) { outputs.insert(.init(owner: "--qmp", path: path), at: 0) }
        var inputs = [OutputFiles.Named(owner: "--kernel", path: kernel)] + OutputFiles.disks(specs)
        if let initrd { inputs.append(.init(owner: "--initrd", path: initrd)) }
        try OutputFiles.refuseShared(outputs: outputs, inputs: inputs)
        let image: KernelImage
        do { image = try KernelImage(path: kernel, limit: size) } catch { throw UserInputError("--kernel: \(error)") }
        var initrdBytes: [UInt8]?
        if let initrd {
            do { initrdBytes = try KernelImage.readFile(initrd, limit: size) } catch { throw UserInputError("--initrd: \(error)") }
        }
        return MachineConfiguration(kernel: image, initrd: initrdBytes, cmdline: cmdline, memorySize: size, cpus: cpus,
                                    devices: requests, serial: attachment, startTime: start)
    }
}
