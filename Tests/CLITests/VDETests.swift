import Foundation
import Testing

/// Two swiftvmm VMs on one real vde_switch: one mini guest answers ARP as 10.0.2.2
/// (`arpserve=1`, e1000), the other asks for it (`nettest=1`, virtio-net).
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"),
       .enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/vde_switch"), "needs vde_switch (apt-get install vde2)"),
       .enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
struct VDETests {
    @Test(.timeLimit(.minutes(1)))
    func twoVMsExchangeARPOverOneSwitch() throws {
        let kernel = try #require(CLIHost.miniGuest)
        let executable = try #require(SwiftVMMProcess.executable)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-vde-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let socket = dir + "/switch.ctl"
        let vdeSwitch = Process()
        vdeSwitch.executableURL = URL(fileURLWithPath: "/usr/bin/vde_switch")
        vdeSwitch.arguments = ["-s", socket]
        // vde_switch exits at EOF on its stdin: that is how it is stopped (a child spawned from a
        // test thread inherits that thread's blocked signals, so SIGTERM might not reach it).
        let switchInput = Pipe()
        vdeSwitch.standardInput = switchInput
        vdeSwitch.standardOutput = FileHandle.nullDevice
        try vdeSwitch.run()
        defer {
            try? switchInput.fileHandleForWriting.close()
            vdeSwitch.waitUntilExit()
        }
        for _ in 0 ..< 100 where !FileManager.default.fileExists(atPath: socket) { usleep(20_000) }

        let serverConsole = dir + "/server.log"
        let server = Process()
        server.executableURL = URL(fileURLWithPath: executable)
        server.arguments = ["run", "--kernel", kernel, "--memory", "32M", "--cmdline", "arpserve=1",
                            "--serial", "file:\(serverConsole)", "--device", "e1000,net=vde:\(socket),mac=52:54:00:00:00:02"]
        server.standardInput = FileHandle.nullDevice
        try server.run()
        // swiftvmm stops on SIGKILL too; SIGTERM may be blocked (see above).
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() } }
        // Start the asking VM only once the answering one listens, so its one ARP request is not lost.
        let deadline = Date().addingTimeInterval(20)
        func serverOutput() -> String { (try? String(contentsOfFile: serverConsole, encoding: .utf8)) ?? "" }
        while !serverOutput().contains("serving ARP") && Date() < deadline && server.isRunning { usleep(20_000) }

        let client = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--cmdline", "nettest=1",
                                              "--device", "virtio-net,net=vde:\(socket),mac=52:54:00:00:00:01"], timeout: 30)
        // The server answers at most one request and then resets; give it 10 s after the client ends.
        let serverDeadline = Date().addingTimeInterval(10)
        while server.isRunning && Date() < serverDeadline { usleep(20_000) }
        #expect(!server.isRunning, "the answering VM did not finish")
        #expect(client.status == 0, "stderr: \(client.stderr)")
        #expect(client.stdout.contains("virtio-net: received ARP reply from 10.0.2.2 at 52:54:00:00:00:02"), "\(client.stdout)")
        #expect(server.isRunning || server.terminationStatus == 0)
        #expect(serverOutput().contains("e1000: answered ARP request from 52:54:00:00:00:01"), "\(serverOutput())")
    }
}
