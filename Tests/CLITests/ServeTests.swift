import Foundation
import Testing

/// `swiftvmm serve` as a user runs it: bad input gets one error line and leaves no socket
/// file; a stop signal ends it with status 0 and the socket removed.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"))
struct ServeTests {
    private func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-serve-\(UUID().uuidString.prefix(8))-\(name)").path
    }

    private func expectOneLineError(_ arguments: [String], mentions: String...) throws {
        let r = try SwiftVMMProcess.run(arguments)
        #expect(r.status == 2, "\(arguments): status \(r.status), stderr: \(r.stderr)")
        #expect(r.errorLines.count == 1, "\(arguments): stderr was: \(r.stderr)")
        for m in mentions { #expect(r.stderr.contains(m), "\(arguments): '\(m)' not in: \(r.stderr)") }
    }

    @Test func needsADevice() throws {
        try expectOneLineError(["serve", "--socket", temporaryPath("a.sock")], mentions: "--device is required")
    }

    @Test func oneSocketPerDevice() throws {
        try expectOneLineError(["serve", "--device", "e1000,net=user"], mentions: "--socket", "one socket per device")
    }

    @Test func badDeviceOptionLeavesNoSocketBehind() throws {
        let path = temporaryPath("b.sock")
        try expectOneLineError(["serve", "--socket", path, "--device", "e1000,net=user,colour=blue"], mentions: "--device", "colour")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func anExistingFileIsNotReplaced() throws {
        let path = temporaryPath("file")
        FileManager.default.createFile(atPath: path, contents: Data("keep".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        try expectOneLineError(["serve", "--socket", path, "--device", "e1000,net=user"], mentions: path, "not a socket")
        #expect(FileManager.default.contents(atPath: path) == Data("keep".utf8))
    }

    @Test func stopSignalExitsCleanlyAndRemovesTheSockets() throws {
        let a = temporaryPath("a.sock"), b = temporaryPath("b.sock")
        let r = try SwiftVMMProcess.run(["serve", "--socket", a, "--device", "e1000,net=user",
                                         "--socket", b, "--device", "virtio-net,net=user"], timeout: 20) { p in
            for _ in 0 ..< 200 where !(FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: b)) {
                usleep(25_000)
            }
            #expect(FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: b))
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: a) && !FileManager.default.fileExists(atPath: b))
    }
}

/// What the Linux-driver tier needs from the machine; nil when it has everything.
enum LinuxTier {
    static let qemu: String? = {
        let shared = CLIHost.repositoryRoot.appendingPathComponent("../shared/qemu/bin/qemu-system-x86_64").standardized.path
        let candidates: [String] = [ProcessInfo.processInfo.environment["SWIFTVMM_QEMU"], shared].compactMap { $0 }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static let missing: String? = {
        if getuid() != 0 { return "root (network namespaces and TAP devices)" }
        if qemu == nil { return "a QEMU with the vfio-user client: set SWIFTVMM_QEMU or provide ../shared/qemu/bin/qemu-system-x86_64" }
        if !FileManager.default.fileExists(atPath: "/usr/bin/iperf3") { return "iperf3 (Tools/install-deps)" }
        if (try? FileManager.default.contentsOfDirectory(atPath: "/boot"))?.contains(where: { $0.hasPrefix("vmlinuz-") }) != true {
            return "a Debian kernel in /boot (Tools/install-deps installs linux-image-amd64)"
        }
        return nil
    }()
}

/// Linux's own e1000 and virtio_net drivers against swiftvmm's devices served over
/// vfio-user to QEMU 10.2 under TCG, with QEMU's own devices as the reference in the same
/// run (Tools/linux-tier/run.py; Docs/vfio-user.md). About two minutes.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"),
       .enabled(if: LinuxTier.missing == nil, "Linux-driver tier needs \(LinuxTier.missing ?? "")"))
struct LinuxDriverTierTests {
    @Test func linuxDriversPassEveryCheckOnBothNICs() throws {
        let root = CLIHost.repositoryRoot.path
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/sh")
        build.arguments = ["-c", "cd '\(root)' && Tools/build-guest >/dev/null"]
        try build.run()
        build.waitUntilExit()
        #expect(build.terminationStatus == 0, "Tools/build-guest failed")
        let tier = Process()
        tier.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tier.arguments = ["python3", root + "/Tools/linux-tier/run.py", "--swiftvmm", SwiftVMMProcess.executable ?? ""]
        if let qemu = LinuxTier.qemu { tier.environment = ProcessInfo.processInfo.environment.merging(["SWIFTVMM_QEMU": qemu]) { $1 } }
        let out = Pipe()
        tier.standardOutput = out
        tier.standardError = out
        try tier.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        tier.waitUntilExit()
        print(output)
        #expect(tier.terminationStatus == 0, "Tools/linux-tier/run.py (guest consoles in /tmp/swiftvmm-linux-tier.log):\n\(output)")
    }
}

/// The QMP control socket driven by the `qemu.qmp` library from PyPI, as scripts drive
/// QEMU (Tools/qmp/check.py): `serve` always; `run` with the mini guest where /dev/kvm is
/// usable (stop/cont pause the vCPUs, query-pci against the guest's own enumeration).
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"))
struct QMPTests {
    @Test func qemuQMPClientDrivesServeAndRun() throws {
        let root = CLIHost.repositoryRoot.path
        var arguments = ["python3", "-u", root + "/Tools/qmp/check.py", "--swiftvmm", SwiftVMMProcess.executable ?? ""]
        if let mini = CLIHost.miniGuest { arguments += ["--mini", mini] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        print(output)
        // 77 means qemu.qmp is missing: Tools/install-deps installs it, so that is a failure too.
        #expect(p.terminationStatus == 0, "Tools/qmp/check.py:\n\(output)")
    }
}
