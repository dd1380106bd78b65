#if canImport(Glibc)
import Glibc
#endif

/// errno values after which a connection (TAP fd, socket) is gone for good.
enum ConnectionErrno {
    static func isGone(_ e: Int32) -> Bool {
        e == EBADFD || e == ENXIO || e == ENODEV || e == EPIPE || e == ECONNRESET || e == ENOTCONN
            || e == ECONNREFUSED || e == ENOENT || e == EBADF
    }

    static func isTransient(_ e: Int32) -> Bool { e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ENOBUFS }
}

/// Sets O_NONBLOCK (and keeps the other flags).
@discardableResult
func setNonBlocking(_ fd: Int32) -> Bool {
    let flags = fcntl(fd, F_GETFL)
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0
}

/// Ethernet header: the smallest thing worth sending.
let minimumFrameSize = 14

/// Linux's IOV_MAX (not importable from Glibc): the most iovecs one writev/sendmsg takes.
let maxIOVecs = 1024
