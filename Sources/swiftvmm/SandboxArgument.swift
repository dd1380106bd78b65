import ArgumentParser
import Sandbox

/// `--sandbox on|off|log` on run, serve and qtest (Docs/security.md).
extension Sandbox.Mode: ExpressibleByArgument {}

enum SandboxArgument {
    static let help: ArgumentHelp = "seccomp confinement of every thread once the VM is set up: on (default), off, or log (allow and log what the lists miss; Docs/security.md)."

    /// Turns the sandbox on before any thread starts; a failure is one clear line.
    static func activate(_ mode: Sandbox.Mode) throws(UserInputError) {
        do { try Sandbox.activate(mode) } catch { throw UserInputError("--sandbox \(mode.rawValue): \(error)") }
    }
}
