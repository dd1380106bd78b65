#if canImport(Glibc)
import Glibc
#endif

/// Why a disk could not be opened. Every message is one line that names the option
/// (`disk=…`, `direct=on`) and says what went wrong and, where it helps, what to do.
/// (Malformed option values are VMMCore's `OptionError`, like every device option.)
public enum DiskBackendError: Error, Equatable, CustomStringConvertible {
    /// A system call failed on what `option=value` names.
    case system(option: String, value: String, call: String, errno: Int32, hint: String?)
    /// The path exists but is not something a disk can live in (a directory, a socket…).
    case notADisk(path: String, reason: String)
    /// The NBD server could not be reached or refused the export.
    case nbd(uri: String, message: String)

    public var description: String {
        switch self {
        case let .system(o, v, call, e, hint):
            "option '\(o)=\(v)': \(call) failed: \(String(cString: strerror(e)))" + (hint.map { " (\($0))" } ?? "")
        case let .notADisk(path, reason):
            "option 'disk=\(path)': \(reason)"
        case let .nbd(uri, message):
            "option 'disk=\(uri)': \(message)"
        }
    }
}
