#if canImport(Glibc)
import Glibc
#endif

/// What the machine offers, for enabling tests that need root or a package.
enum Host {
    static let isRoot = geteuid() == 0
    static let hasTun = access("/dev/net/tun", R_OK | W_OK) == 0
    static var canUseTapAndNetns: Bool { isRoot && hasTun && has("ip") }
    static var hasVDESwitch: Bool { has("vde_switch") }
    static var hasTshark: Bool { has("tshark") }
    static var hasQEMU: Bool { has("qemu-system-x86_64") }
    static var hasEthtool: Bool { has("ethtool") }
    static var hasPython: Bool { has("python3") }

    static func has(_ program: String) -> Bool { path(of: program) != nil }

    static func path(of program: String) -> String? {
        let searchPath = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        let dirs = searchPath.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for dir in dirs {
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
        var template = Array("/tmp/swiftvmm-backends-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }
    deinit { _ = Shell.run("rm", ["-rf", path]) }
}
