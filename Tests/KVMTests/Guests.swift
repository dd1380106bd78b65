import DeviceCatalog
import Foundation
import KVM
import Testing
import VMMCore

/// Builds the guests the KVM tests boot, once per test run.
enum Guests {
    /// The mini guest from Tools/guest/mini, built with gcc into a temporary directory.
    static let mini: Result<String, GuestBuildError> = {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-mini-\(getpid())").path
        let script = Host.repositoryRoot.appendingPathComponent("Tools/guest/mini/build.sh").path
        guard Host.run("/bin/sh", [script, out]) == 0 else { return .failure(GuestBuildError(what: "mini guest (\(script))")) }
        return .success(out + "/mini.elf")
    }()

    /// Debian's vmlinux, extracted once from /boot/vmlinuz-* and cached in guest-out/ (gitignored).
    static let debianVmlinux: Result<String, GuestBuildError> = {
        guard let source = Host.debianKernel else { return .failure(GuestBuildError(what: "no /boot/vmlinuz-*")) }
        let cache = Host.repositoryRoot.appendingPathComponent("guest-out")
        try? FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let target = cache.appendingPathComponent("vmlinux-" + source.dropFirst("/boot/vmlinuz-".count)).path
        if FileManager.default.fileExists(atPath: target) { return .success(target) }
        let tool = Host.repositoryRoot.appendingPathComponent("Tools/guest/extract-vmlinux").path
        guard let python = Host.which("python3"), Host.run(python, [tool, source, target]) == 0 else {
            return .failure(GuestBuildError(what: "vmlinux from \(source)"))
        }
        return .success(target)
    }()
}

struct GuestBuildError: Error, CustomStringConvertible {
    let what: String
    var description: String { "cannot build \(what)" }
}

/// Runs a machine on its own thread (Machine.run blocks) and captures COM1 in a file.
final class BootedMachine: @unchecked Sendable {
    let machine: Machine
    let serialPath: String
    private let done = DispatchSemaphore(value: 0)
    private var exit: MachineExit?

    init(kernel: String, cmdline: String, initrd: [UInt8]? = nil, memory: UInt64 = 64 << 20, cpus: Int = 1,
         devices: [String] = []) throws {
        serialPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftvmm-serial-\(UUID().uuidString)").path
        let requests = try devices.map { DeviceRequest(spec: try DeviceSpec.parse($0), text: $0) }
        let configuration = MachineConfiguration(kernel: try KernelImage(path: kernel), initrd: initrd, cmdline: cmdline,
                                                 memorySize: memory, cpus: cpus, devices: requests,
                                                 serial: .file(serialPath))
        machine = try Machine(configuration: configuration, registry: DeviceCatalog.registry, services: DeviceCatalog.makeServices())
    }

    deinit { try? FileManager.default.removeItem(atPath: serialPath) }

    func start() {
        let thread = Thread { [self] in
            exit = machine.run()
            done.signal()
        }
        thread.start()
    }

    /// Waits for the guest to stop by itself; stops it (as SIGTERM would) after `timeout`.
    func wait(timeout: Double) -> MachineExit? {
        if done.wait(timeout: .now() + timeout) == .timedOut {
            machine.stop(.signal(SIGTERM))
            done.wait()
        }
        return exit
    }

    /// Polls the console until `predicate` holds or `timeout` passes.
    func waitForOutput(timeout: Double, until predicate: (String) -> Bool) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if predicate(output) { break }
            if done.wait(timeout: .now() + 0.5) == .success {
                done.signal()
                break
            }
        }
        return output
    }

    var output: String { (try? String(contentsOfFile: serialPath, encoding: .utf8)) ?? "" }

    func boot(timeout: Double) -> (MachineExit?, String) {
        start()
        let exit = wait(timeout: timeout)
        return (exit, output)
    }
}
