#if canImport(Glibc)
import Glibc
#endif

/// A real nbdkit serving on a unix socket in a temporary directory; killed on `stop()` or
/// deinit (and by itself if the test process dies: --exit-with-parent).
final class NBDKit {
    let socket: String
    private let pidFile: String
    private let arguments: [String]
    private var pid: pid_t?

    var uri: String { "nbd+unix:///?socket=\(socket)" }

    /// `arguments`: filters, plugin and its parameters, e.g. ["memory", "64M"].
    init?(in dir: TemporaryDirectory, _ arguments: [String], name: String = "nbd.sock") {
        socket = dir.path + "/" + name
        pidFile = dir.path + "/" + name + ".pid"
        self.arguments = arguments
        guard start() else { return nil }
    }

    deinit { stop() }

    /// Starts the server; waits until it accepts connections (nbdkit writes its PID file then).
    @discardableResult
    func start() -> Bool {
        unlink(pidFile)
        pid = Shell.spawn("nbdkit", ["-f", "--exit-with-parent", "-U", socket, "-P", pidFile] + arguments)
        guard pid != nil else { return false }
        return eventually(5) { access(pidFile, R_OK) == 0 }
    }

    /// Stops the server: SIGTERM by default; `crash` kills it at once (SIGKILL), as a
    /// server that dies does (nbdkit takes seconds to honour SIGTERM with a client connected).
    func stop(crash: Bool = false) {
        if let p = pid { Shell.kill(p, signal: crash ? SIGKILL : SIGTERM) }
        pid = nil
        unlink(socket)
    }
}
