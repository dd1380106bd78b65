import ArgumentParser
import CLinux
import DeviceCatalog
import QTest
import Sandbox
#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// `swiftvmm qtest`: a machine without vCPUs driven by QEMU's qtest line protocol, so the
/// same script runs against swiftvmm's devices and QEMU's (see Docs/testing.md).
struct QTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qtest",
        abstract: "Serve QEMU's qtest protocol on stdio or a unix socket (virtual time).",
        discussion: """
        Devices come from --device entries (e.g. --device e1000,slot=4,net=user). Nothing programs \
        the devices: scripts enumerate and place BARs through ports 0xCF8/0xCFC, as under QEMU with \
        a firmware that only halts. Device timers advance only with clock_step/clock_set.
        """)

    @Option(name: .customLong("device"), help: "A device: NAME[,slot=N][,key=value...]. Repeatable.")
    var devices: [String] = []

    @Option(name: .customLong("memory"), parsing: .unconditional, help: "Guest RAM size, e.g. 128M or 1G (a bare number is MiB, as in run).")
    var memory: String = "128M"

    @Option(name: .customLong("socket"), help: "Listen on this unix socket path for one client instead of using stdio.")
    var socket: String?

    @Option(help: SandboxArgument.help)
    var sandbox: Sandbox.Mode = .on

    func run() throws {
        let size: UInt64
        do { size = try MemorySize.parseGuestRAM(memory) } catch { throw reportUserError(error.description) }
        // A client that goes away mid-answer must end the session, not the process (write
        // then fails with EPIPE); the same for stdout as a closed pipe.
        signal(SIGPIPE, SIG_IGN)
        // The socket is made before the sandbox, which allows only `accept` on it. While no
        // client has come, SIGINT and SIGTERM arrive through a signalfd and end the wait
        // with the socket file removed (they used to end the process and leave it).
        var listener: QTestTransport.Listener?
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        var stopFD: Int32 = -1
        if let socket {
            do { listener = try QTestTransport.Listener(path: socket) } catch { throw reportUserError(error.description) }
            pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
            stopFD = signalfd(-1, &stopSignals, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        }
        defer { if stopFD >= 0 { close(stopFD) } }
        do { try SandboxArgument.activate(sandbox, runAs: nil) } catch { throw reportUserError(error.description) }
        let machine: QTestMachine
        let services = DeviceCatalog.makeServices()
        do {
            machine = try QTestMachine(memorySize: size, devices: devices, registry: DeviceCatalog.registry,
                                       services: services)
        } catch {
            throw reportUserError(error is QTestMachineError ? "\(error)" : "--device: \(error)")
        }
        services.resolve(MachineStart.self)?.start()   // the command line is accepted
        defer { machine.shutdown() }
        // The client is accepted and the socket file removed before this thread takes the
        // control role, which may not unlink.
        var client: Int32?
        if let listener {
            guard let accepted = try listener.acceptClient(stopFD: stopFD) else { return }   // stopped while waiting
            client = accepted
            // With a client, a stop signal ends the process as before (nothing is left to remove).
            pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        }
        defer { if let client { close(client) } }
        // Set up: this thread now answers the protocol (device accesses, the clock).
        ThreadConfinement.enter(.control)
        if let client {
            QTestTransport.serve(machine: machine, input: client, output: client)
        } else {
            QTestTransport.serve(machine: machine, input: 0, output: 1)
        }
    }
}
