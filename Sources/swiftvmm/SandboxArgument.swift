import ArgumentParser
import Sandbox

/// `--sandbox on|off|log` on run, serve and qtest (Docs/security.md).
extension Sandbox.Mode: ExpressibleByArgument {}

enum SandboxArgument {
    static let help: ArgumentHelp = "seccomp confinement of every thread once the VM is set up: on (default), off, or log (allow and log what the lists miss; Docs/security.md)."

    static let runAsHelp: ArgumentHelp = "Started as root: open what needs privilege, then run as this user (with its groups, e.g. kvm); socket files are handed to it (Docs/security.md)."

    /// Turns the sandbox on before any thread starts; a failure is one clear line.
    static func activate(_ mode: Sandbox.Mode, runAs: RunAs?) throws(UserInputError) {
        do { try Sandbox.activate(mode, runAs: runAs) } catch { throw UserInputError("--sandbox \(mode.rawValue): \(error)") }
    }

    static func runAs(_ user: String?) throws(UserInputError) -> RunAs? {
        guard let user else { return nil }
        do { return try RunAs(user: user) } catch { throw UserInputError("--runas \(user): \(error)") }
    }
}
