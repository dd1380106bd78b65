#if canImport(Glibc)
import Glibc
#endif
import Sandbox
import Testing
import VMMCore

/// `--runas` gives the sockets the VMM listens on to the user, and nothing else: root
/// must not give away a file put at such a name since (a hard link to another of its
/// sockets, a symbolic link to /etc/passwd).
@Suite struct RunAsHandOverTests {
    @Test(.enabled(if: geteuid() == 0 && getpwnam("nobody") != nil, "needs root and the user nobody: a hand-over from root to another user"))
    func onlyTheSocketItselfIsHandedOver() throws {
        let runAs = try RunAs(user: "nobody")
        var template = Array("/tmp/swiftvmm-runas-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { _ = dir.withCString { path in system("rm -rf '\(String(cString: path))'") } }
        func owner(_ path: String) -> uid_t? {
            var st = stat()
            return lstat(path, &st) == 0 ? st.st_uid : nil
        }

        let mine = try UnixSocketListener(path: dir + "/a.sock")
        #expect(runAs.handOver(mine.path) == nil)
        #expect(owner(mine.path) == runAs.uid)

        let other = try UnixSocketListener(path: dir + "/b.sock")
        #expect(link(other.path, dir + "/c.sock") == 0)
        #expect(runAs.handOver(dir + "/c.sock") == EPERM)     // a second name: not the one made
        #expect(owner(other.path) == 0)

        #expect(symlink("/etc/passwd", dir + "/d.sock") == 0)
        #expect(runAs.handOver(dir + "/d.sock") != nil)
        #expect(owner("/etc/passwd") == 0)
        #expect(owner(dir + "/d.sock") == 0)
    }
}
