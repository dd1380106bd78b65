#if canImport(Glibc)
import Glibc
#endif
import CSandbox
import VMMCore

/// The seccomp confinement of `swiftvmm run`, `serve` and `qtest` (issue 14,
/// Docs/security.md): each thread installs the allow-list of its role (`ThreadRole`) when
/// its setup is done. Anything else raises SIGSYS, and the process ends with one line
/// naming the call and the role.
public enum Sandbox {
    public enum Mode: String, Sendable, CaseIterable {
        /// Forbidden calls end the process (the default).
        case on
        /// No filters (debugging).
        case off
        /// Forbidden calls are allowed and logged by the kernel (SECCOMP_RET_LOG), to
        /// find what a list is missing.
        case log
    }

    public struct Failure: Error, CustomStringConvertible {
        public let role: ThreadRole
        public let errno: Int32
        public var description: String {
            "cannot install the \(role) sandbox: \(String(cString: strerror(errno))) (run with --sandbox=off to go without)"
        }
    }

    /// Turns confinement on for this process: threads that enter a role from now on are
    /// filtered. A thread whose filter cannot be installed ends the process (running
    /// unconfined when the user asked otherwise would be worse).
    public static func activate(_ mode: Mode, runAs: RunAs? = nil) throws {
        guard mode != .off else { return }
        // Log timestamps read /etc/localtime the first time; read it now, while opening
        // files is still allowed.
        tzset()
        let rc = csandbox_prepare(mode == .log ? Int32(CSANDBOX_LOG.rawValue) : Int32(CSANDBOX_TRAP.rawValue),
                                  runAs.map { Int($0.uid) } ?? -1, runAs.map { Int($0.gid) } ?? -1,
                                  runAs.map { $0.groups.count } ?? -1)
        guard rc == 0 else { throw Failure(role: .main, errno: -rc) }
        ThreadConfinement.install(enforcing: mode == .on) { role in
            let rc = csandbox_enter(role.rawValue)
            guard rc == 0 else {
                let message = "swiftvmm: \(Failure(role: role, errno: -rc))\n"
                _ = message.withCString { write(2, $0, strlen($0)) }
                exit(1)
            }
        }
    }

    /// The calling thread's role, once it entered one.
    public static var currentRole: String? { csandbox_current_role().map { String(cString: $0) } }
}
