#if canImport(Glibc)
import Glibc
#endif
import CSandbox

/// `--runas USER`: started as root to open what needs privilege (/dev/kvm, a TAP), the
/// VMM then becomes USER (with USER's groups, e.g. `kvm`) for the rest of its life, as
/// QEMU's `-runas` does. Socket files it created are handed to USER first, so it can still
/// remove them at exit.
public struct RunAs: Sendable {
    public let user: String
    public let uid: uid_t
    public let gid: gid_t
    /// USER's groups (its primary group first), looked up once: `drop` sets exactly these,
    /// and the sandbox allows `setgroups` with exactly this many.
    public let groups: [gid_t]

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Looks USER up; refused unless the process is root (nothing to drop otherwise).
    public init(user: String) throws(Failure) {
        guard geteuid() == 0 else {
            throw Failure(description: "only a process started as root can drop to another user (this one runs as uid \(geteuid()))")
        }
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwnam_r(user, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
            throw Failure(description: "no user '\(user)'")
        }
        guard entry.pw_uid != 0 else { throw Failure(description: "'\(user)' is root: nothing would be dropped") }
        self.user = user
        uid = entry.pw_uid
        gid = entry.pw_gid
        groups = try Self.groups(of: user, primary: entry.pw_gid)
    }

    /// getgrouplist, asked again with the count it reports when 64 is too few; Linux
    /// takes at most NGROUPS_MAX (65,536) in one setgroups.
    private static func groups(of user: String, primary: gid_t) throws(Failure) -> [gid_t] {
        var count: Int32 = 64
        for _ in 0 ..< 3 {
            var list = [gid_t](repeating: 0, count: Int(count))
            let asked = count
            if getgrouplist(user, primary, &list, &count) >= 0, count <= asked {
                return Array(list.prefix(Int(count)))
            }
            guard count > asked, count <= 65_536 else { break }
        }
        throw Failure(description: "cannot list the groups of '\(user)' (at most 65,536)")
    }

    /// Gives the socket at `path` (one this process listens on) to the user, so that it
    /// can connect and remove it at exit. Root gives nothing else away: a link or another
    /// file put at that name since is left alone (`csandbox_hand_over_socket`). Returns the
    /// errno when it could not.
    @discardableResult
    public func handOver(_ path: String) -> Int32? {
        let rc = csandbox_hand_over_socket(path, Int(uid), Int(gid))
        return rc == 0 ? nil : -rc
    }

    /// Becomes the user: its groups, its gid, its uid (real, effective and saved: setuid
    /// as root sets all three, so root cannot come back).
    public func drop() throws(Failure) {
        guard setgroups(groups.count, groups) == 0 else { throw Failure(description: "setgroups: \(String(cString: strerror(errno)))") }
        guard setgid(gid) == 0 else { throw Failure(description: "setgid(\(gid)): \(String(cString: strerror(errno)))") }
        guard setuid(uid) == 0 else { throw Failure(description: "setuid(\(uid)): \(String(cString: strerror(errno)))") }
        guard getuid() == uid, geteuid() == uid, getgid() == gid else {
            throw Failure(description: "the user ids did not all change to \(uid)")
        }
    }
}
