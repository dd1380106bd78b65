#if canImport(Glibc)
import Glibc
#endif

/// Why a backend could not be configured or opened. Every message is one line that names
/// the option (`net=tap:tap0`, `hostfwd=…`, `capture=…`) and says what went wrong.
public enum NetBackendError: Error, Equatable, CustomStringConvertible {
    /// `net=` names no backend this factory knows.
    case unknownBackend(String)
    /// An option's value does not parse or is out of range.
    case badValue(option: String, value: String, reason: String)
    /// An option that only means something for another backend (`hostfwd=` with `net=tap:…`).
    case notApplicable(option: String, backend: String)
    /// A system call failed while opening what an option names.
    case system(option: String, value: String, call: String, errno: Int32, hint: String?)
    /// libslirp refused a `hostfwd=` rule (the host port is taken, or the address is not local).
    case hostForwardRefused(rule: String)

    public var description: String {
        switch self {
        case let .unknownBackend(v):
            "unknown network backend in 'net=\(v)' (known: tap:NAME, tap-fd:N|NAME, vde:URL, user, stream:unix:PATH, stream:tcp:HOST:PORT, stream-fd:N|NAME)"
        case let .badValue(o, v, r):
            "bad value '\(v)' for option '\(o)': \(r)"
        case let .notApplicable(o, b):
            "option '\(o)' does not apply to net=\(b)"
        case let .system(o, v, call, e, hint):
            "option '\(o)=\(v)': \(call) failed: \(String(cString: strerror(e)))" + (hint.map { " (\($0))" } ?? "")
        case let .hostForwardRefused(rule):
            "option 'hostfwd=\(rule)': cannot listen on the host side (port in use or address not local)"
        }
    }
}
