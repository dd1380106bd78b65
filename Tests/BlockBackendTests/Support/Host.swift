#if canImport(Glibc)
import Glibc
#endif
import Testing

/// What the machine offers, for enabling tests that need a package.
enum Host {
    static var hasNbdkit: Bool { path(of: "nbdkit") != nil }
    /// Loop devices: root, /dev/loop-control and losetup (util-linux).
    static var canUseLoopDevices: Bool { geteuid() == 0 && access("/dev/loop-control", R_OK | W_OK) == 0 && path(of: "losetup") != nil }
    static let nbdkitMissing: Comment = "needs nbdkit on PATH (apt-get install nbdkit): its memory and file plugins and error, delay and blocksize-policy filters"

    static func path(of program: String) -> String? {
        let searchPath = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for dir in searchPath.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let candidate = dir + "/" + program
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// A temporary directory removed with everything in it.
final class TemporaryDirectory {
    let path: String
    init() {
        var template = Array("/tmp/swiftvmm-blk-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { p in p.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } ?? "/tmp" }
    }
    deinit { _ = Shell.run("/bin/rm", ["-rf", path]) }

    /// Creates `name` with `size` bytes (sparse) and returns its path.
    func file(_ name: String, size: Int) -> String {
        let p = path + "/" + name
        let fd = open(p, O_CREAT | O_RDWR | O_TRUNC, 0o644)
        _ = ftruncate(fd, off_t(size))
        close(fd)
        return p
    }
}
