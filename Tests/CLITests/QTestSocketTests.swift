import Foundation
import Testing

/// `swiftvmm qtest --socket` as QEMU's libqtest uses it, under the default sandbox: the
/// socket is made before the sandbox is on, and a client that leaves in the middle of an
/// answer ends the session, not the process (SIGPIPE is ignored).
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"))
struct QTestSocketTests {
    private func connectWhenReady(_ path: String) -> Int32? {
        for _ in 0 ..< 400 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if ok == 0 { return fd }
            close(fd)
            usleep(25_000)
        }
        return nil
    }

    /// Stopped (SIGTERM or Ctrl-C) while no client has come: it ended by the signal and
    /// left its socket file; it now exits 0 with the file removed.
    @Test(arguments: [SIGTERM, SIGINT])
    func aStopSignalWhileWaitingRemovesTheSocket(_ signal: Int32) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-qtest-\(UUID().uuidString.prefix(8)).sock").path
        let r = try SwiftVMMProcess.run(["qtest", "--socket", path], timeout: 30) { p in
            for _ in 0 ..< 400 where !FileManager.default.fileExists(atPath: path) { usleep(25_000) }
            usleep(100_000)   // past the listener's creation, into the wait
            kill(p.processIdentifier, signal)
        }
        #expect(r.status == 0, "status \(r.status), stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// The protocol is answered in the control role, which may not unlink: the teardown
    /// after it (a stream `server=on` socket's removal) now runs in the main role.
    @Test func aStreamServerSocketIsRemovedAfterTheSession() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-qstream-\(UUID().uuidString.prefix(8)).sock").path
        let r = try SwiftVMMProcess.run(["qtest", "--device", "e1000,net=stream:unix:\(path),server=on"], timeout: 30)   // stdin at EOF
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path), "\(path) left behind")
    }

    /// QEMU's libqtest ends every session with SIGTERM (`qtest_quit`). That used to end
    /// the process by the default action and leave the backends' files (here a stream
    /// `server=on` socket; a VDE data socket the same way); the session now ends, the
    /// teardown runs and the status is 0. On stdio and over the socket.
    @Test(arguments: [false, true])
    func aStopSignalDuringASessionRunsTheTeardown(overSocket: Bool) throws {
        let tag = UUID().uuidString.prefix(8)
        let stream = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-qstop-\(tag).sock").path
        let control = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-qtest-\(tag).sock").path
        let input = Pipe()
        defer { try? input.fileHandleForWriting.close() }
        var arguments = ["qtest", "--memory", "64M", "--device", "e1000,net=stream:unix:\(stream),server=on"]
        if overSocket { arguments += ["--socket", control] }
        let r = try SwiftVMMProcess.run(arguments, timeout: 30, input: input) { p in
            if overSocket {
                guard let fd = connectWhenReady(control) else { Issue.record("no socket at \(control)"); return }
                defer { close(fd) }
                let request = Array("endianness\n".utf8)
                _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                var reply = [UInt8](repeating: 0, count: 10)
                let n = reply.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                #expect(n == 10 && String(decoding: reply, as: UTF8.self) == "OK little\n")   // in the session
                kill(p.processIdentifier, SIGTERM)
            } else {
                for _ in 0 ..< 400 where !FileManager.default.fileExists(atPath: stream) { usleep(25_000) }
                try? input.fileHandleForWriting.write(contentsOf: Array("endianness\n".utf8))
                usleep(200_000)
                kill(p.processIdentifier, SIGTERM)
            }
        }
        #expect(r.status == 0, "status \(r.status), stderr: \(r.stderr)")
        if !overSocket { #expect(r.stdout.contains("OK little")) }
        #expect(!FileManager.default.fileExists(atPath: stream), "\(stream) left behind")
        #expect(!FileManager.default.fileExists(atPath: control))
    }

    /// A reader that stops reading stdout leaves the answering thread waiting for room;
    /// a stop signal must still end the session (the write waits in `poll` on the stop
    /// too). Blocked in `write(2)` with SIGTERM blocked, only SIGKILL ended it.
    @Test func aStopSignalEndsASessionWhoseReaderStoppedReading() throws {
        guard let executable = SwiftVMMProcess.executable else { throw SwiftVMMProcess.MissingExecutable() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["qtest", "--memory", "64M"]
        let input = Pipe(), output = Pipe()   // output is never read: 64 KiB fill it
        p.standardInput = input
        p.standardOutput = output
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        try input.fileHandleForWriting.write(contentsOf: Array(String(repeating: "read 0x1000 0x1000\n", count: 40).utf8))
        usleep(500_000)
        #expect(p.isRunning)
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!p.isRunning, "still running 10 s after SIGTERM")
        if !p.isRunning { #expect(p.terminationStatus == 0) }
    }

    /// Started with stdin closed, the signalfd took descriptor 0 and was polled as the
    /// input, and the session never ended; descriptors 0–2 are /dev/null when closed.
    @Test func aClosedStdinIsAnEmptySession() throws {
        guard let executable = SwiftVMMProcess.executable else { throw SwiftVMMProcess.MissingExecutable() }
        let r = try SwiftVMMProcess.run(executable: "/bin/sh", ["-c", "exec '\(executable)' qtest --memory 64M <&-"], timeout: 20)
        #expect(r.status == 0, "status \(r.status), stderr: \(r.stderr)")
    }

    @Test func aClientThatLeavesMidAnswerEndsTheSessionNotTheProcess() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-qtest-\(UUID().uuidString.prefix(8)).sock").path
        let r = try SwiftVMMProcess.run(["qtest", "--socket", path, "--memory", "64M"], timeout: 30) { _ in
            guard let fd = connectWhenReady(path) else { Issue.record("no socket at \(path)"); return }
            // A 4 MiB answer (8 MiB of hex) the client never reads, then it goes.
            let request = Array("endianness\nread 0x0 0x400000\n".utf8)
            _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            var reply = [UInt8](repeating: 0, count: 10)
            let n = reply.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            #expect(n == 10 && String(decoding: reply, as: UTF8.self) == "OK little\n")
            close(fd)
        }
        #expect(r.status == 0, "status \(r.status) (-13 is SIGPIPE), stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
