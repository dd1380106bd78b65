import Foundation
import Testing

/// Running without root (issue 14, Docs/security.md): a user in the kvm group with a TAP
/// the administrator gave it, or with a TAP descriptor its parent opened; `--runas`; and
/// the bad inputs of each, one line apiece.
@Suite(.serialized,
       .enabled(if: CLIHost.hasExecutable, "needs the swiftvmm executable built next to the tests (swift build)"),
       .enabled(if: CLIHost.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: geteuid() == 0, "needs root to create the TAP and become another user"),
       .enabled(if: CLIHost.miniGuest != nil, "needs gcc that can compile -m32 (apt-get install gcc)"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs setpriv (util-linux)"))
struct UnprivilegedTests {
    static let nobody = "65534"

    /// A namespace with TAP swtap0 owned by nobody at 10.0.2.2, answering the guest's ARP.
    final class Namespace {
        let name = "swvmm-u-\(getpid())-\(UInt32.random(in: 0 ..< .max))"
        init(tapUser: String) throws {
            for command in [["netns", "add", name],
                            ["-n", name, "tuntap", "add", "dev", "swtap0", "mode", "tap", "user", tapUser, "vnet_hdr"],
                            ["-n", name, "addr", "add", "10.0.2.2/24", "dev", "swtap0"],
                            ["-n", name, "link", "set", "swtap0", "up"]] {
                guard Self.run("/usr/sbin/ip", command).status == 0 else { throw SetupFailed(command: command) }
            }
        }
        deinit { _ = Self.run("/usr/sbin/ip", ["netns", "delete", name]) }

        static func run(_ executable: String, _ arguments: [String]) -> (status: Int32, out: String, err: String) {
            guard let r = try? SwiftVMMProcess.run(executable: executable, arguments) else { return (-1, "", "cannot start \(executable)") }
            return (r.status, r.stdout, r.stderr)
        }
        struct SetupFailed: Error { let command: [String] }
    }

    /// /dev/kvm for the kvm group while the test runs (some machines ship it root:root 0600).
    static func withKVMForGroup<T>(_ body: () throws -> T) rethrows -> T {
        var st = stat()
        stat("/dev/kvm", &st)
        let (mode, gid) = (st.st_mode & 0o7777, st.st_gid)
        let kvmGroup = getgrnam("kvm").map { $0.pointee.gr_gid } ?? gid
        chown("/dev/kvm", 0, kvmGroup)
        chmod("/dev/kvm", mode | 0o060)
        defer { chown("/dev/kvm", 0, gid); chmod("/dev/kvm", mode) }
        return try body()
    }

    @Test func kvmGroupUserWithTheirOwnTAP() throws {
        let kernel = try #require(CLIHost.miniGuest), executable = try #require(SwiftVMMProcess.executable)
        let ns = try Namespace(tapUser: Self.nobody)
        let r = Self.withKVMForGroup {
            Namespace.run("/usr/sbin/ip", ["netns", "exec", ns.name, "/usr/bin/setpriv", "--reuid=\(Self.nobody)", "--regid=kvm",
                                           "--clear-groups", executable, "run", "--kernel", kernel, "--memory", "32M",
                                           "--cmdline", "nettest=1", "--device", "virtio-net,net=tap:swtap0"])
        }
        #expect(r.status == 0, "stderr: \(r.err)")
        #expect(r.out.contains("nettest: 1 devices, ok"), "console: \(r.out)")
    }

    /// A privileged parent opens the TAP and execs swiftvmm as nobody with the descriptor.
    @Test func tapDescriptorFromTheParent() throws {
        let kernel = try #require(CLIHost.miniGuest), executable = try #require(SwiftVMMProcess.executable)
        let ns = try Namespace(tapUser: "root")
        let parent = """
        import fcntl, grp, os, struct, sys
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"swtap0", 0x0002 | 0x1000 | 0x4000))
        os.set_inheritable(fd, True)
        kvm = grp.getgrnam("kvm").gr_gid
        os.setgroups([kvm]); os.setgid(kvm); os.setuid(65534)
        os.execv(sys.argv[1], [sys.argv[1], "run", "--kernel", sys.argv[2], "--memory", "32M", "--cmdline", "nettest=1",
                               "--device", f"e1000,net=tap-fd:{fd}"])
        """
        let r = Self.withKVMForGroup {
            Namespace.run("/usr/sbin/ip", ["netns", "exec", ns.name, "python3", "-c", parent, executable, kernel])
        }
        #expect(r.status == 0, "stderr: \(r.err)")
        #expect(r.out.contains("e1000: received ARP reply from 10.0.2.2"), "console: \(r.out)")
    }

    @Test func runasDropsEveryThread() throws {
        let kernel = try #require(CLIHost.miniGuest)
        nonisolated(unsafe) var uids: [String] = []
        let r = try SwiftVMMProcess.run(["run", "--runas", "nobody", "--kernel", kernel, "--memory", "32M", "--cmdline", "ticks=20",
                                         "--device", "virtio-net,net=user", "--serial", "none"], timeout: 30) { p in
            usleep(1_500_000)
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/task")) ?? []
            uids = tasks.compactMap { tid in
                (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/task/\(tid)/status", encoding: .utf8))?
                    .split(separator: "\n").first { $0.hasPrefix("Uid:") }.map(String.init)
            }
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(r.status == 128 + SIGTERM, "stderr: \(r.stderr)")   // stopped by the signal, cleanly
        #expect(!uids.isEmpty && uids.allSatisfy { $0.split(separator: "\t").dropFirst().allSatisfy { $0 == "65534" } }, "\(uids)")
    }

    @Test func badInputIsOneLine() throws {
        let kernel = try #require(CLIHost.miniGuest), executable = try #require(SwiftVMMProcess.executable)
        var cases: [(status: Int32, err: String, mentions: String)] = []
        var r = try SwiftVMMProcess.run(["run", "--runas", "no-such-user-here", "--kernel", kernel])
        cases.append((r.status, r.stderr, "--runas no-such-user-here: no user"))
        let asNobody = Namespace.run("/usr/bin/setpriv", ["--reuid=\(Self.nobody)", "--regid=\(Self.nobody)", "--clear-groups",
                                                          executable, "run", "--runas", "nobody", "--kernel", kernel])
        cases.append((asNobody.status, asNobody.err, "only a process started as root"))
        r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--device", "e1000,net=tap-fd:250"])
        cases.append((r.status, r.stderr, "file descriptor 250 is not open"))
        r = try SwiftVMMProcess.run(["run", "--kernel", kernel, "--memory", "32M", "--device", "e1000,net=tap-fd:swtapX"])
        cases.append((r.status, r.stderr, "no descriptor named 'swtapX'"))
        // A TAP that belongs to root, attached by name as nobody.
        let ns = try Namespace(tapUser: "root")
        let foreign = Self.withKVMForGroup {
            Namespace.run("/usr/sbin/ip", ["netns", "exec", ns.name, "/usr/bin/setpriv", "--reuid=\(Self.nobody)", "--regid=kvm",
                                           "--clear-groups", executable, "run", "--kernel", kernel, "--memory", "32M",
                                           "--device", "e1000,net=tap:swtap0"])
        }
        cases.append((foreign.status, foreign.err, "belongs to another user"))
        for c in cases {
            #expect(c.status != 0)
            #expect(c.err.split(separator: "\n").count == 1, "\(c.err)")
            #expect(c.err.contains(c.mentions), "\(c.err)")
        }
    }
}
