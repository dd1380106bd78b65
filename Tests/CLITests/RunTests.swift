import Foundation
import Testing

/// `swiftvmm run` end to end on /dev/kvm: exit status follows the guest, signals stop it cleanly.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"),
       .enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"))
struct RunTests {
    @Test(.enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func miniGuestResetExitsZero() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--cmdline", "via-cli",
                                         "--log-level", "info"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("cmdline: via-cli"))
        #expect(r.stdout.contains("mini: done, resetting"))
        #expect(r.stderr.contains("first serial output after"))
        #expect(r.stderr.contains("guest reset the machine"))
    }

    @Test(.enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func serialToFileAndBhyveHostBridgeSlotsAccepted() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-serial-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--serial", "file:\(log)",
                                         "-s", "0:0,hostbridge", "-s", "31,lpc"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.isEmpty)
        let console = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(console.contains("mini: done"))
    }

    /// A `net=stream:unix:PATH,server=on` socket is the VMM's own: created mode 0600 and
    /// removed at exit, under the default sandbox too (the main thread may unlink; the
    /// backend skipped it whenever its thread was confined). A path that is not a socket
    /// is refused, not taken for "Address already in use".
    @Test(.enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func streamServerSocketIsRemovedAtExit() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-stream-\(UUID().uuidString).sock").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--serial", "none",
                                         "--device", "e1000,net=stream:unix:\(path),server=on"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path), "\(path) left behind")
        FileManager.default.createFile(atPath: path, contents: Data())
        let refused = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--serial", "none",
                                               "--device", "e1000,net=stream:unix:\(path),server=on"])
        #expect(refused.status == 2 && refused.errorLines.count == 1 && refused.stderr.contains("exists and is not a socket"),
                "stderr: \(refused.stderr)")
        #expect(FileManager.default.fileExists(atPath: path))
    }

    /// A `capture=` file is emptied when the machine starts, on the main thread before the
    /// sandbox: the io-loop thread, which did it for a while, may not truncate (SIGSYS at
    /// start, found by a hostile read).
    @Test(.enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func captureUnderTheDefaultSandbox() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let pcap = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-capture-\(UUID().uuidString).pcap").path
        FileManager.default.createFile(atPath: pcap, contents: Data(repeating: 0x55, count: 4096))   // an old capture
        defer { try? FileManager.default.removeItem(atPath: pcap) }
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--device", "e1000,net=user,capture=\(pcap)"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let bytes = [UInt8](FileManager.default.contents(atPath: pcap) ?? Data())
        #expect(bytes.count >= 24 && bytes.prefix(4) == [0xD4, 0xC3, 0xB2, 0xA1], "a fresh pcap header, not the old bytes")
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func signalStopsTheVMCleanly(_ signal: Int32) throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.spin)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "16M", "--log-level", "notice"], timeout: 30) { p in
            usleep(1_500_000)
            kill(p.processIdentifier, signal)
        }
        #expect(r.status == 128 + signal, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("stopped by signal \(signal)"))
    }

    /// The guest writes 20 KB of console into a one-page stdout pipe nobody reads: the
    /// vCPU does not block (the I/O loop writes what the pipe takes and the rest is
    /// dropped), and a stop signal still ends the VMM. The vCPU used to block in write(2)
    /// holding the UART's lock, and SIGTERM left it alive until SIGKILL.
    @Test(.enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func aConsoleNobodyReadsDoesNotWedgeTheVMM() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let executable = try #require(SwiftVMMProcess.executable)
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]) }
        _ = fcntl(pipeFDs[1], 1031, 4096)   // F_SETPIPE_SZ: one page
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M", "--cmdline", "ticks=1 " + String(repeating: "x", count: 20000)]
        p.standardOutput = FileHandle(fileDescriptor: pipeFDs[1], closeOnDealloc: false)
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        close(pipeFDs[1])
        var queued: Int32 = 0
        // Full, or as full as non-blocking writes of the guest's bytes make it (a write
        // larger than the room left may be refused whole, leaving a few bytes free).
        for _ in 0 ..< 100 where queued < 4000 {
            usleep(100_000)
            _ = ioctl(pipeFDs[0], UInt(FIONREAD), &queued)
        }
        #expect(queued >= 4000)
        usleep(500_000)
        kill(p.processIdentifier, SIGTERM)
        for _ in 0 ..< 100 where p.isRunning { usleep(100_000) }
        let stillRunning = p.isRunning
        if stillRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(!stillRunning, "SIGTERM did not end the VMM within 10 s")
    }

    @Test func tripleFaultExitsNonZeroWithRegisterDump() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.make(code: [0x0F, 0x0B])) // ud2, no IDT
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "16M"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("triple fault"))
        #expect(r.stderr.contains("rip=0000000000100100"))
    }

    /// On a terminal the console is raw (Ctrl-C goes to the guest); Ctrl-A x stops the VM.
    /// The terminal's description, which stdin shares with stdout and stderr, stays
    /// blocking: the console reads through one of its own (O_NONBLOCK on the shared one
    /// made log writes fail with EAGAIN, and stayed if the VMM was killed).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "needs script(1) for a pty (util-linux)"))
    func consoleEscapeQuitsOnATerminal() throws {
        let kernel = try CLIHost.temporaryFile(MiniELF.spin)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let executable = try #require(SwiftVMMProcess.executable)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        p.arguments = ["-qfec", "\(executable) run --kernel \(kernel) --memory 16M --log-level info", "/dev/null"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        usleep(1_500_000)
        // The VMM (script's child, or its shell's): stderr's file status flags, in octal.
        let vmm = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap(Int32.init).first { pid in
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return args.first == executable && args.contains(kernel)
        }
        let fdinfo = vmm.flatMap { try? String(contentsOfFile: "/proc/\($0)/fdinfo/2", encoding: .utf8) } ?? ""
        let flags = fdinfo.split(separator: "\n").first { $0.hasPrefix("flags:") }
            .flatMap { Int($0.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8) }
        #expect(flags.map { $0 & Int(O_NONBLOCK) == 0 } == true, "stderr's flags: \(fdinfo)")
        input.fileHandleForWriting.write(Data([0x01, UInt8(ascii: "x")]))
        let deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        try? input.fileHandleForWriting.close()
        p.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(text)")
        #expect(text.contains("stopped from the console (Ctrl-A x)"))
    }
}
