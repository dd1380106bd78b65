#if canImport(Glibc)
import Glibc
#endif

/// A resolved socket address (Unix path or TCP host:port), kept for reconnects.
struct SocketAddress: @unchecked Sendable {
    private var storage = sockaddr_storage()
    private(set) var length: socklen_t = 0
    var family: Int32 { Int32(storage.ss_family) }

    /// `sockaddr_un`; nil if `path` does not fit sun_path (107 bytes).
    init?(unixPath path: String) {
        let bytes = Array(path.utf8)
        var un = sockaddr_un()
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: un.sun_path) else { return nil }
        un.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &un.sun_path) { p in p.copyBytes(from: bytes) }
        withUnsafeMutableBytes(of: &storage) { s in withUnsafeBytes(of: un) { s.copyMemory(from: $0) } }
        length = socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    /// The first address getaddrinfo gives for `host` (numeric or a name) and `port`.
    init(host: String, port: UInt16, passive: Bool) throws(SocketAddressError) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &result)
        guard rc == 0, let first = result, let addr = first.pointee.ai_addr else {
            throw SocketAddressError(reason: rc == 0 ? "no address" : String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(result) }
        let len = Int(first.pointee.ai_addrlen)
        withUnsafeMutableBytes(of: &storage) { s in
            s.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: min(len, s.count)))
        }
        length = socklen_t(min(len, MemoryLayout<sockaddr_storage>.size))
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// A non-blocking, close-on-exec stream socket for this address's family.
    func makeSocket() -> Int32 {
        socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }
}

struct SocketAddressError: Error { let reason: String }
