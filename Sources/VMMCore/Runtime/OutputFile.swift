#if canImport(Glibc)
import Glibc
#endif

/// Opens a file the VMM writes to (a `capture=` pcap file, `--serial file:`) so that a
/// refused command line can leave nothing behind: it says whether this call created the
/// file, by creating it exclusively. (Checking first with `lstat` and then opening with
/// O_CREAT missed a symbolic link to a missing file: the link existed, so the file it
/// created through the link was never removed.) Such a link is refused: there is no file
/// to write to, and making one at the far end of a link is not what the user asked for.
public enum OutputFile {
    public enum Failure: Error, Sendable {
        /// `open` failed with this errno (ENXIO: a FIFO without a reader, or a socket).
        case open(errno: Int32)
        /// A symbolic link to a file that does not exist.
        case danglingLink
    }

    /// Opens `path` write-only, non-blocking (a FIFO's open must not wait for a reader)
    /// and close-on-exec, creating it with mode 0644 if it is missing. `created`: whether
    /// this call made it (remove it if the VM never starts).
    public static func open(_ path: String) -> Result<(fd: Int32, created: Bool), Failure> {
        let flags = O_WRONLY | O_NONBLOCK | O_CLOEXEC
        // O_EXCL fails with EEXIST on any existing name, a symbolic link included.
        let fd = Glibc.open(path, flags | O_CREAT | O_EXCL, 0o644)
        if fd >= 0 { return .success((fd, true)) }
        guard errno == EEXIST else { return .failure(.open(errno: errno)) }
        let existing = Glibc.open(path, flags)
        if existing >= 0 { return .success((existing, false)) }
        let e = errno
        var st = stat()
        if e == ENOENT, lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFLNK { return .failure(.danglingLink) }
        return .failure(.open(errno: e))
    }
}
