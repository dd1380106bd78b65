#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import VMMCore

@main
struct SwiftVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftvmm",
        abstract: "A userspace VMM for Linux/KVM with E1000 and virtio-net devices.",
        subcommands: [RunCommand.self, ServeCommand.self, DevicesCommand.self, BackendsCommand.self, QTestCommand.self,
                      SandboxCheckCommand.self])

    /// Like ArgumentParser's `main`, except that a command-line error is one line on stderr
    /// (`swiftvmm: error: …`, status 2) rather than an error followed by the usage text.
    static func main() {
        // Before anything of our own is open: what `tap-fd:N` and `stream-fd:N` may name.
        PassedFileDescriptors.recordInherited()
        // Descriptors 0–2 closed by whoever started us are /dev/null from here on: the next
        // descriptor opened (a signalfd, a TAP, a disk) would otherwise take the number
        // and be read or written as stdin, stdout or stderr.
        for fd: Int32 in 0 ... 2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
            // Without /dev/null (a bare chroot) the number must not stay free either.
            if open("/dev/null", O_RDWR) != fd { Glibc.exit(1) }
        }
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) } // --help, --version
            // A value the user typed with newlines in it is quoted in the message: escaped
            // first, so that its blank lines are not taken for the end of the paragraph.
            var text = message(for: error)
            for argument in CommandLine.arguments where argument.contains("\n") {
                text = text.replacing(argument, with: escapingControlCharacters(argument))
            }
            // The parser's message up to its first blank line, joined: "one of the following:"
            // is followed by the choices, one per line.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            let paragraph = lines.prefix { !$0.allSatisfy { $0 == " " } }.map { line in
                String(line.drop { $0 == " " || $0 == "-" }.drop { $0 == " " })
            }
            exit(withError: reportUserError(paragraph.isEmpty ? "\(error)" : paragraph.joined(separator: " ")))
        }
        if let type = Swift.type(of: command) as? SingleValuedOptions.Type,
           let repeated = type.repeatedOption(in: CommandLine.arguments.dropFirst(2)) {
            exit(withError: reportUserError("\(repeated) is given more than once (it takes one value)"))
        }
        do {
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
