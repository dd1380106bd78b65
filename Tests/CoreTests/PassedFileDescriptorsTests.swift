#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMMCore

/// `getfd` names and `add-fd` sets stay apart, as in QEMU: `/dev/fdset/N` always means
/// set N, and `closefd` reaches only named descriptors.
@Suite struct PassedFileDescriptorsTests {
    private func pipeEnd() -> Int32 {
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        close(fds[1])
        return fds[0]
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    @Test func aSetNameIsNoDescriptorName() {
        let passed = PassedFileDescriptors()
        let fd = pipeEnd()
        #expect(throws: PassedFileDescriptors.Failure.badName("/dev/fdset/0")) { try passed.keep(fd, as: "/dev/fdset/0") }
        #expect(!isOpen(fd))   // refused, so closed: nothing held that could never be taken
        #expect(passed.names.isEmpty)
    }

    @Test func closefdLeavesSetsAlone() throws {
        let passed = PassedFileDescriptors()
        let fd = pipeEnd()
        let set = try passed.add(fd, toSet: nil, opaque: nil)
        #expect(!passed.close(named: "/dev/fdset/\(set)"))
        #expect(isOpen(fd))
        #expect(passed.take("/dev/fdset/\(set)") == fd)
        close(fd)
    }
}
