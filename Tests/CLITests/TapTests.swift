import Foundation
import Testing

/// The mini guest's NIC drivers against a real TAP in a network namespace the test creates:
/// the namespace's kernel owns 10.0.2.2 on the TAP and answers the guest's ARP request.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"),
       .enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: geteuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0, "needs root and /dev/net/tun (TAP in a network namespace)"),
       .enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
struct TapTests {
    /// A namespace with a persistent TAP `swtap0` holding 10.0.2.2/24; deleted afterwards.
    final class Namespace {
        let name = "swvmm-\(getpid())-\(UInt32.random(in: 0 ..< .max))"
        init() throws {
            for command in [["netns", "add", name],
                            ["-n", name, "tuntap", "add", "dev", "swtap0", "mode", "tap", "vnet_hdr"],
                            ["-n", name, "addr", "add", "10.0.2.2/24", "dev", "swtap0"],
                            ["-n", name, "link", "set", "swtap0", "up"]] {
                guard Self.ip(command) == 0 else { throw SetupFailed(command: command) }
            }
        }
        deinit { Self.ip(["netns", "delete", name]) }

        var tapAddress: String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = ["netns", "exec", name, "cat", "/sys/class/net/swtap0/address"]
            let out = Pipe()
            p.standardOutput = out
            guard (try? p.run()) != nil else { return "" }
            p.waitUntilExit()
            return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        @discardableResult
        static func ip(_ arguments: [String]) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = arguments
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return -1 }
            p.waitUntilExit()
            return p.terminationStatus
        }

        struct SetupFailed: Error { let command: [String] }
    }

    @Test(arguments: ["e1000", "virtio-net"])
    func nicExchangesARPWithNamespaceKernel(_ device: String) throws {
        let kernel = try #require(CLIHost.miniGuest)
        let ns = try Namespace()
        let executable = try #require(SwiftVMMProcess.executable)
        // `ip netns exec` runs swiftvmm inside the namespace, where it attaches to swtap0.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns.name, executable, "run", "--kernel", kernel, "--memory", "32M",
                       "--cmdline", "nettest=1", "--device", "\(device),net=tap:swtap0"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let console = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "stderr: \(errors)")
        #expect(console.contains("\(device): received ARP reply from 10.0.2.2 at \(ns.tapAddress)"), "console: \(console)")
        #expect(console.contains("nettest: 1 devices, ok"))
        // The persistent TAP is still there and released: it can be attached again.
        #expect(Namespace.ip(["-n", ns.name, "link", "show", "swtap0"]) == 0)
    }

    /// Runs swiftvmm inside the namespace; `whileRunning` may signal it.
    private func runInNamespace(_ ns: Namespace, _ arguments: [String], whileRunning: ((Process) -> Void)? = nil) throws -> (Int32, String) {
        let executable = try #require(SwiftVMMProcess.executable)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns.name, executable] + arguments
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        whileRunning?(p)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, errors)
    }

    @Test func failedDeviceReleasesTheTAPsCreatedBeforeIt() throws {
        let ns = try Namespace()
        let kernel = try CLIHost.temporaryFile(MiniELF.halt)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let (status, errors) = try runInNamespace(ns, ["run", "--kernel", kernel, "--memory", "16M",
                                                       "--device", "e1000,net=tap:swleak0", "--device", "e1000,bogus=1"])
        #expect(status == 2)
        #expect(errors.contains("bogus"))
        #expect(Namespace.ip(["-n", ns.name, "link", "show", "swleak0"]) != 0, "TAP swleak0 was left behind")
    }

    @Test func sigtermReleasesTheTAP() throws {
        let ns = try Namespace()
        let kernel = try CLIHost.temporaryFile(MiniELF.spin)
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let (status, errors) = try runInNamespace(ns, ["run", "--kernel", kernel, "--memory", "16M",
                                                       "--device", "virtio-net,net=tap:swleak1"]) { p in
            usleep(1_500_000)
            #expect(Namespace.ip(["-n", ns.name, "link", "show", "swleak1"]) == 0, "TAP swleak1 not created")
            kill(p.processIdentifier, SIGTERM) // ip netns exec passes it on: it execs swiftvmm
        }
        #expect(status == 128 + SIGTERM, "stderr: \(errors)")
        #expect(Namespace.ip(["-n", ns.name, "link", "show", "swleak1"]) != 0, "TAP swleak1 was left behind")
    }
}
