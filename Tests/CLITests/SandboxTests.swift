import Foundation
import Testing

/// The seccomp sandbox (issue 14, Docs/security.md): what each thread role may not do,
/// and that every thread of a running VM is confined.
@Suite(.enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"))
struct SandboxTests {
    /// A forbidden call ends the process with 128 + SIGSYS and one line naming the call
    /// and the role; allowed ones go through.
    @Test(arguments: [("vcpu", "open", "openat"), ("io", "execve", "execve"), ("vcpu", "socket", "socket"),
                      ("control", "ptrace", "ptrace"), ("io", "fork", "clone"), ("disk", "open", "openat"),
                      ("main", "execve", "execve"), ("io", "open-create", "openat"), ("disk-connect", "open-create", "openat"),
                      ("vcpu", "tgkill-other", "tgkill"), ("control", "tgkill-other", "tgkill"),
                      ("closer", "open", "openat"), ("closer", "socket", "socket")])
    func forbiddenCallsEndTheProcessAndAreNamed(_ role: String, _ call: String, _ syscall: String) throws {
        let r = try SwiftVMMProcess.run(["sandbox-check", role, call])
        #expect(r.status == 159, "stderr: \(r.stderr)")
        #expect(r.errorLines.count == 1)
        #expect(r.stderr.contains("forbidden system call: \(syscall) ("), "stderr: \(r.stderr)")
    }

    @Test(arguments: [("vcpu", "write"), ("vcpu", "kvm-run"), ("io", "socket"), ("io", "open"),
                      ("disk-connect", "uname"), ("disk-connect", "sendmmsg"), ("vcpu", "tgkill-self"), ("main", "tgkill-self")])
    func allowedCallsGoThrough(_ role: String, _ call: String) throws {
        let r = try SwiftVMMProcess.run(["sandbox-check", role, call])
        #expect(r.status == 0, "stderr: \(r.stderr)")
    }

    /// No role may map executable memory: the call fails with EPERM (so a library that
    /// tries, such as an NSS module's dlopen during a name lookup, fails cleanly) and the
    /// process goes on.
    @Test(arguments: ["main", "vcpu", "io", "control", "disk", "disk-connect", "closer"])
    func executableMappingsAreRefused(_ role: String) throws {
        let r = try SwiftVMMProcess.run(["sandbox-check", role, "mmap-exec"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("returned \(-EPERM)"), "stdout: \(r.stdout)")
    }

    /// /proc/PID/task/*/status: Seccomp 2 (filter) on every thread once the VM runs.
    @Test(.enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"),
          .enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"))
    func everyThreadOfARunningVMIsConfined() throws {
        let kernel = try #require(CLIHost.miniGuest)
        nonisolated(unsafe) var modes: [String] = []
        let r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--cmdline", "ticks=20",
                                         "--device", "virtio-net,net=user", "--device", "e1000,net=user", "--serial", "none"],
                                        timeout: 30) { p in
            usleep(1_500_000)
            modes = Self.seccompModes(p.processIdentifier)
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(r.status == 0 || r.status == 128 + SIGTERM, "stderr: \(r.stderr)")
        #expect(modes.count >= 3, "threads: \(modes)")   // main, I/O loop, vCPU
        #expect(modes.allSatisfy { $0 == "2" }, "Seccomp per thread: \(modes)")
    }

    @Test func serveThreadsAreConfinedAndSandboxOffIsNot() throws {
        // log: every filter installs (a rule whose action equals the default one made
        // libseccomp refuse the whole filter, and the process exited at once).
        for (mode, expected) in [("on", "2"), ("log", "2"), ("off", "0")] {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-sb-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            nonisolated(unsafe) var modes: [String] = []
            let r = try SwiftVMMProcess.run(["serve", "--sandbox", mode, "--socket", dir + "/d.sock", "--device", "e1000,net=user",
                                             "--qmp", "unix:\(dir)/q.sock,server=on,wait=off"], timeout: 30) { p in
                for _ in 0 ..< 100 where !FileManager.default.fileExists(atPath: dir + "/q.sock") { usleep(20_000) }
                usleep(300_000)
                modes = Self.seccompModes(p.processIdentifier)
                kill(p.processIdentifier, SIGTERM)
            }
            #expect(r.status == 0, "stderr: \(r.stderr)")
            #expect(modes.count >= 4 && modes.allSatisfy { $0 == expected }, "--sandbox \(mode): \(modes)")
        }
    }

    @Test func badModeIsOneClearLine() throws {
        let r = try SwiftVMMProcess.run(["serve", "--sandbox", "maybe", "--socket", "/tmp/x.sock", "--device", "e1000"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--sandbox"))
    }

    static func seccompModes(_ pid: Int32) -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid -> String? in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Seccomp:") }) else { return nil }
            return line.split(separator: "\t").last.map(String.init)
        }
    }
}
