#if canImport(Glibc)
import Glibc
#endif

/// Limits the VMM sets on itself once set up (Docs/security.md).
public enum ResourceLimits {
    /// Descriptors beyond those open now that a running VM may still need: libslirp's
    /// per-flow sockets, reconnects, QMP clients, captures, descriptors passed with getfd.
    public static let descriptorHeadroom = 1024

    /// RLIMIT_NOFILE down to what is open plus `descriptorHeadroom` (never above the
    /// hard limit), so a device or backend bug cannot exhaust the host's descriptors.
    /// Returns the new soft limit.
    @discardableResult
    public static func limitDescriptors() -> Int {
        let open = (try? openDescriptorCount()) ?? 0
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return -1 }
        let wanted = rlim_t(open + descriptorHeadroom)
        let soft = min(wanted, limit.rlim_max)
        limit.rlim_cur = soft
        _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
        return Int(soft)
    }

    private static var RLIMIT_NOFILE_VALUE: __rlimit_resource_t { __rlimit_resource_t(RLIMIT_NOFILE.rawValue) }

    private static func openDescriptorCount() throws -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while readdir(dir) != nil { n += 1 }
        return max(0, n - 2)   // . and ..
    }
}
