#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMMCore

/// `getfd` names and `add-fd` sets stay apart, as in QEMU: `/dev/fdset/N` always means
/// set N, and `closefd` reaches only named descriptors.
@Suite struct PassedFileDescriptorsTests {
    /// One end of a socket pair to hand over, and the other to tell whether it was closed
    /// (a closed descriptor's number may be reused at once by a test running beside this).
    private func socketPair() -> (handed: Int32, watch: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
        return (fds[0], fds[1])
    }

    /// EOF on the watching end: the handed end was closed. Closes of passed descriptors
    /// may run on `DescriptorCloser`'s thread (once any server in this process started
    /// it), so they are waited for, at most 5 s.
    private func peerClosed(_ watch: Int32, waiting milliseconds: Int32 = 5000) -> Bool {
        var p = pollfd(fd: watch, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, milliseconds) == 1 else { return false }
        var byte: UInt8 = 0
        return recv(watch, &byte, 1, Int32(MSG_DONTWAIT)) == 0
    }

    @Test func aSetNameIsNoDescriptorName() {
        let passed = PassedFileDescriptors()
        let (fd, watch) = socketPair()
        defer { close(watch) }
        #expect(throws: PassedFileDescriptors.Failure.badName("/dev/fdset/0")) { try passed.keep(fd, as: "/dev/fdset/0") }
        #expect(peerClosed(watch))   // refused, so closed: nothing held that could never be taken
        #expect(passed.names.isEmpty)
    }

    @Test func closefdLeavesSetsAlone() throws {
        let passed = PassedFileDescriptors()
        let (fd, watch) = socketPair()
        defer { close(watch) }
        let set = try passed.add(fd, toSet: nil, opaque: nil)
        #expect(!passed.close(named: "/dev/fdset/\(set)"))
        #expect(!peerClosed(watch, waiting: 100))
        #expect(passed.take("/dev/fdset/\(set)") == fd)
        close(fd)
    }
}
