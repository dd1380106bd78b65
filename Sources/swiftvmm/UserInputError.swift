#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser

/// A problem with what the user typed: reported as one line on stderr, exit status 2.
struct UserInputError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Prints `swiftvmm: error: MESSAGE` (one line) and returns the exit code to throw.
func reportUserError(_ message: String) -> ExitCode {
    let line = "swiftvmm: error: \(message)\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    return ExitCode(2)
}
