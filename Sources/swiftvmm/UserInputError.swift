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
/// Control characters in it (a newline in a path or value the user typed) are written as
/// escapes, so the message stays one line.
/// One warning line on stderr: the command goes on.
func reportWarning(_ message: String) {
    let line = "swiftvmm: warning: \(escapingControlCharacters(message))\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

func reportUserError(_ message: String) -> ExitCode {
    let line = "swiftvmm: error: \(escapingControlCharacters(message))\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    return ExitCode(2)
}

/// `text` with its control characters written as escapes (`\n`, `\u{1b}`).
func escapingControlCharacters(_ text: String) -> String {
    text.unicodeScalars.map { s -> String in
        switch s {
        case "\n": "\\n"
        case "\r": "\\r"
        case "\t": "\\t"
        default: s.value < 0x20 || s.value == 0x7F ? "\\u{\(String(s.value, radix: 16))}" : String(s)
        }
    }.joined()
}
