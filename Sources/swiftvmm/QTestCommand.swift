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
        do { try OutputFiles.refuseShared(devices: devices) } catch {
            throw reportUserError(error.description)
        }
        // A client that goes away mid-answer must end the session, not the process (write
        // then fails with EPIPE); the same for stdout as a closed pipe.
        signal(SIGPIPE, SIG_IGN)
        // The socket is made before the sandbox, which allows only `accept` on it. SIGINT
        // and SIGTERM arrive through a signalfd, blocked in every thread from here on (the
        // machine's threads inherit the mask): they end the wait for a client, the making
        // of the devices (a VDE handshake may take seconds) or the session, and the
        // teardown removes what the backends made. QEMU's libqtest ends every session
        // with SIGTERM; as the default action it left a VDE data socket or a stream
        // `server=on` socket behind each time.
        var listener: QTestTransport.Listener?
        if let socket {
            do { listener = try QTestTransport.Listener(path: socket) } catch { throw reportUserError(error.description) }
        }
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        let stopFD = signalfd(-1, &stopSignals, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        guard stopFD >= 0 else { throw reportUserError("qtest: signalfd failed: \(String(cString: strerror(errno)))") }
        defer { close(stopFD) }
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
        }
        defer { if let client { close(client) } }
        // The protocol (device accesses, the clock) is answered on a thread of its own in the
        // control role; this thread waits in the main role, whose allow-list has `unlink`, so
        // the teardown removes the files backends made (a stream `server=on` socket). The
        // thread is made before this one is confined: confined threads make none.
        let input = client ?? 0, output = client ?? 1
        guard let answering = ProtocolThread({
            ThreadConfinement.enter(.control)
            QTestTransport.serve(machine: machine, input: input, output: output, stop: stopFD)
        }) else {
            throw reportUserError("qtest: cannot start a thread: \(String(cString: strerror(errno)))")
        }
        ThreadConfinement.enter(.main)
        answering.join()
    }
}

/// One thread running `body`, joined by its maker.
private final class ProtocolThread {
    private var thread: pthread_t?
    private let body: () -> Void

    init?(_ body: @escaping () -> Void) {
        self.body = body
        let me = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<ProtocolThread>.fromOpaque(arg).takeRetainedValue().body()
            return nil
        }, me.toOpaque())
        guard rc == 0 else {
            me.release()
            errno = rc
            return nil
        }
        thread = tid
    }

    func join() {
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }
}
