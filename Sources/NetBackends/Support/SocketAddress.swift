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

    /// The most addresses a host name is tried at: a name with more (a DNS answer the
    /// user does not control) is tried at its first eight, each once per round.
    static let maximumAddresses = 8

    /// Every address getaddrinfo gives for `host` (numeric or a name) and `port`, in its
    /// order (RFC 6724's): a client tries them in turn, as QEMU's `inet_connect_saddr`
    /// does, so "localhost" reaches a peer on 127.0.0.1 when ::1 comes first.
    static func resolve(host: String, port: UInt16, passive: Bool) throws(SocketAddressError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : 0
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &result)
        guard rc == 0 else { throw SocketAddressError(reason: String(cString: gai_strerror(rc))) }
        defer { freeaddrinfo(result) }
        var addresses: [SocketAddress] = []
        var next = result
        while let entry = next, addresses.count < maximumAddresses {
            next = entry.pointee.ai_next
            guard let addr = entry.pointee.ai_addr else { continue }
            var address = SocketAddress()
            let len = min(Int(entry.pointee.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
            withUnsafeMutableBytes(of: &address.storage) { s in
                s.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: len))
            }
            address.length = socklen_t(len)
            addresses.append(address)
        }
        guard !addresses.isEmpty else { throw SocketAddressError(reason: "no address") }
        return addresses
    }

    private init() {}

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// A non-blocking, close-on-exec stream socket for this address's family.
    func makeSocket() -> Int32 {
        socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }
}

struct SocketAddressError: Error { let reason: String }
