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
        let listening = socket.map { [OutputFiles.Named(owner: "--socket", path: $0)] } ?? []
        do { try OutputFiles.refuseShared(devices: devices, listening: listening) } catch {
            throw reportUserError(error.description)
        }
        // A client that goes away mid-answer must end the session, not the process (write
        // then fails with EPIPE); the same for stdout as a closed pipe.
        signal(SIGPIPE, SIG_IGN)
        // SIGINT and SIGTERM arrive through a signalfd, blocked in every thread from here
        // on (the machine's threads inherit the mask) and before the socket exists: they
        // end the wait for a client, the making of the devices (a VDE handshake may take
        // seconds) or the session, and the teardown removes what the backends made. QEMU's
        // libqtest ends every session with SIGTERM; as the default action it left a VDE
        // data socket or a stream `server=on` socket behind each time.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        let signals = signalfd(-1, &stopSignals, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        guard signals >= 0 else { throw reportUserError("qtest: signalfd failed: \(String(cString: strerror(errno)))") }
        defer { close(signals) }
        // This thread watches the signals and tells the protocol's thread through `stop`
        // (a signalfd sees only what is pending for the process or for the thread that
        // polls it); the protocol's thread says through `done` that the session ended.
        let stop = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)), done = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        defer { if stop >= 0 { close(stop) }; if done >= 0 { close(done) } }
        guard stop >= 0, done >= 0 else { throw reportUserError("qtest: eventfd failed: \(String(cString: strerror(errno)))") }
        // The socket is made before the sandbox, which allows only `accept` on it.
        var listener: QTestTransport.Listener?
        if let socket {
            do { listener = try QTestTransport.Listener(path: socket) } catch { throw reportUserError(error.description) }
        }
        // Opened before the sandbox; closed after the machine, whose loop may write to it.
        let stdioAnswers = socket == nil ? Self.standardOutputForAnswers() : 1
        defer { if stdioAnswers != 1 { close(stdioAnswers) } }
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
        // The machine goes before the client's descriptor: the I/O loop may be reporting
        // an interrupt on it until then.
        var client: Int32?
        defer {
            machine.shutdown()
            if let client { close(client) }
        }
        // The client is accepted and the socket file removed before this thread takes the
        // control role, which may not unlink.
        if let listener {
            guard let accepted = try listener.acceptClient(stopFD: signals) else { return }   // stopped while waiting
            client = accepted
        }
        // The protocol (device accesses, the clock) is answered on a thread of its own in the
        // control role; this thread waits in the main role, whose allow-list has `unlink`, so
        // the teardown removes the files backends made (a stream `server=on` socket). The
        // thread is made before this one is confined: confined threads make none.
        let input = client ?? 0, output = client ?? stdioAnswers
        guard let answering = WorkerThread(name: "qtest-protocol", role: .control, {
            QTestTransport.serve(machine: machine, input: input, output: output, stop: stop)
            _ = clinux_eventfd_signal(done)
        }) else {
            throw reportUserError("qtest: cannot start a thread: \(String(cString: strerror(errno)))")
        }
        ThreadConfinement.enter(.main)
        // Until the session ends by itself or a stop signal comes; then the protocol's
        // thread leaves its read or a write that does not progress (`writeAll` watches
        // `stop` too) and the teardown runs.
        _ = StoppableWait.wait(done, for: Int16(POLLIN), orStop: signals)
        // Also when the session ended by itself: the I/O loop may be writing an interrupt
        // report to a reader that stopped reading, and the teardown waits for the loop.
        _ = clinux_eventfd_signal(stop)
        answering.join()
    }
}

extension QTestCommand {
    /// Where stdio answers go: stdout, or when it is a pipe or a terminal, a non-blocking
    /// descriptor of its own on the same file (opened through /proc, so the caller's
    /// descriptor keeps its flags). A blocking write there can wait in the kernel after
    /// `poll` said there was room (a terminal stopped with ^S, a pipe shared with
    /// stderr), where no stop signal reaches it. A regular file never blocks and keeps
    /// its offset only on fd 1 itself.
    static func standardOutputForAnswers() -> Int32 {
        var st = stat()
        guard fstat(1, &st) == 0, st.st_mode & S_IFMT == S_IFIFO || st.st_mode & S_IFMT == S_IFCHR else { return 1 }
        let own = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)   // never made our controlling terminal
        return own >= 0 ? own : 1
    }
}
