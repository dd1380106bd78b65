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

/// The number of bytes in a scatter list, or nil if the sum overflows.
func totalLength(_ segments: [UnsafeRawBufferPointer]) -> Int? {
    var total = 0
    for s in segments {
        let (sum, overflow) = total.addingReportingOverflow(s.count)
        if overflow { return nil }
        total = sum
    }
    return total
}

/// Copies a scatter list into `out` (which must be large enough); returns the bytes written.
func gather(_ segments: [UnsafeRawBufferPointer], into out: UnsafeMutableRawBufferPointer) -> Int {
    var offset = 0
    for s in segments where s.count > 0 {
        guard let base = s.baseAddress, let dst = out.baseAddress, offset + s.count <= out.count else { break }
        (dst + offset).copyMemory(from: base, byteCount: s.count)
        offset += s.count
    }
    return offset
}

/// Ethernet header: the smallest thing worth sending.
let minimumFrameSize = 14

/// Linux's IOV_MAX (not importable from Glibc): the most iovecs one writev/sendmsg takes.
let maxIOVecs = 1024
