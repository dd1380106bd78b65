#if canImport(Glibc)
import Glibc
#endif
import CLinux

public enum UnixSocketListenerError: Error, Equatable, CustomStringConvertible {
    case emptyPath
    case pathTooLong(String)
    case notASocket(String)
    case inUse(String)
    case system(path: String, call: String, errno: Int32)

    public var description: String {
        switch self {
        case .emptyPath: "the socket path is empty"
        case let .pathTooLong(p): "socket path '\(p)' is too long (at most 107 bytes)"
        case let .notASocket(p): "'\(p)' exists and is not a socket; refusing to replace it"
        case let .inUse(p): "socket '\(p)' is in use by another process"
        case let .system(p, c, e): "socket '\(p)': \(c) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// A listening unix stream socket for a control or device protocol (vfio-user, QMP).
/// The file is created mode 0600 (access control is the file's permissions), an
/// existing path that is not a socket is refused rather than replaced, a socket another
/// process still listens on is refused, a stale one is replaced, and `closeAndRemove()`
/// removes the file again.
public final class UnixSocketListener: @unchecked Sendable {
    public let path: String
    public let fd: Int32
    private var closed = false

    public init(path: String, backlog: Int32 = 1) throws(UnixSocketListenerError) {
        var addr = sockaddr_un()
        guard !path.isEmpty else { throw .emptyPath }
        guard clinux_sockaddr_un(&addr, path) == 0 else { throw .pathTooLong(path) }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
            if Self.someoneListens(&addr) { throw .inUse(path) }
            unlink(path)
        }
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw .system(path: path, call: "socket", errno: errno) }
        // The mode is set on the socket before bind, which makes the file with it (Linux's
        // unix_bind_bsd: the socket inode's mode less the umask), so there is no moment in
        // which others could connect. Not by changing the umask around bind: that is the
        // whole process's, and a file or child process made meanwhile on another thread got
        // mode 0600 (a test that built the guest's initramfs then could not run its /init).
        guard fchmod(s, 0o600) == 0 else {
            let e = errno
            Glibc.close(s)
            throw .system(path: path, call: "fchmod", errno: e)
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindErrno = errno
        guard bound == 0 else { Glibc.close(s); throw .system(path: path, call: "bind", errno: bindErrno) }
        guard listen(s, backlog) == 0 else {
            let e = errno
            Glibc.close(s); unlink(path)
            throw .system(path: path, call: "listen", errno: e)
        }
        self.path = path
        fd = s
    }

    /// A non-blocking probe: a listener whose backlog is full answers EAGAIN instead of
    /// holding us in connect; it is alive all the same. Only ECONNREFUSED (nobody bound)
    /// means the file is a stale leftover.
    private static func someoneListens(_ addr: inout sockaddr_un) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { Glibc.close(probe) }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return r == 0 || errno == EAGAIN || errno == EINPROGRESS
    }

    /// Waits for a client, or returns nil when `stopFD` becomes readable first.
    public func accept(stopFD: Int32) -> Int32? {
        while true {
            guard StoppableWait.wait(fd, for: Int16(POLLIN), orStop: stopFD) == .ready else { return nil }
            let c = Glibc.accept(fd, nil, nil)
            if c >= 0 {
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                return c
            }
            let e = errno
            if e == EINTR || e == ECONNABORTED || e == EAGAIN { continue }
            // Out of descriptors or memory (a client of another device may have used them
            // up): the connection stays queued, so wait a moment (or for the stop) and try
            // again, rather than end this listener's server for good.
            if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                if StoppableWait.wait(-1, for: 0, orStop: stopFD, milliseconds: 100) == .stopped { return nil }
                continue
            }
            return nil
        }
    }

    /// Gives the listening descriptor to the caller, who from then on closes it and
    /// removes the file (the stream backend accepts from the I/O loop and removes the file
    /// only where its thread may).
    public func handOver() -> Int32 {
        closed = true
        return fd
    }

    /// Stops listening and removes the socket file.
    public func closeAndRemove() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
        unlink(path)
    }

    deinit { closeAndRemove() }
}
