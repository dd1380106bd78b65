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
