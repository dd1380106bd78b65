#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CSandbox
import Sandbox
import VMMCore

/// `swiftvmm sandbox-check ROLE CALL` (hidden): enters a thread role's sandbox and makes
/// one system call, so tests can see what the filters forbid — the process must end with
/// status 159 (128 + SIGSYS) and one line naming the call — and what they allow.
struct SandboxCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sandbox-check", shouldDisplay: false)

    enum Call: String, ExpressibleByArgument, CaseIterable {
        case open, execve, socket, ptrace, fork, write, kvmRun = "kvm-run", openCreate = "open-create", uname, sendmmsg,
             mmapExec = "mmap-exec", tgkillOther = "tgkill-other", tgkillSelf = "tgkill-self"
    }

    @Argument(help: "main, vcpu, io, control, disk, disk-connect or closer") var role: String
    @Argument(help: "open, open-create, execve, socket, ptrace, fork, write, kvm-run, uname, sendmmsg, mmap-exec, tgkill-other, tgkill-self")
    var call: Call

    func run() throws {
        let roles: [String: ThreadRole] = ["main": .main, "vcpu": .vcpu, "io": .io, "control": .control,
                                           "disk": .disk, "disk-connect": .diskConnect, "closer": .closer]
        guard let r = roles[role] else { throw reportUserError("sandbox-check: unknown role '\(role)'") }
        do { try Sandbox.activate(.on) } catch { throw reportUserError("\(error)") }
        ThreadConfinement.enter(r)
        let which: Int32 = switch call {
        case .open: 0
        case .execve: 1
        case .socket: 2
        case .ptrace: 3
        case .fork: 4
        case .write: 5
        case .kvmRun: 6
        case .openCreate: 7
        case .uname: 8
        case .sendmmsg: 9
        case .mmapExec: 10
        case .tgkillOther: 11
        case .tgkillSelf: 12
        }
        let result = csandbox_probe(which)
        print("returned \(result)")
    }
}
