import VMMCore

/// Which `disk=` values are NBD URIs and which of libnbd's URI forms we accept.
/// libnbd parses the URI itself; this refuses, with a message, what we do not support
/// (TLS: its buffered records do not mix with level-triggered epoll; vsock) before that.
enum NBDAddress {
    /// The scheme if `disk` is meant as a URI (`something://`), else nil (a path).
    static func scheme(of disk: String) -> Substring? {
        guard let colon = disk.firstIndex(of: ":"), disk[colon...].hasPrefix("://") else { return nil }
        let scheme = disk[..<colon]
        // A path like `./a://b` is still a path: a scheme is letters, digits, + - . only.
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) else { return nil }
        return scheme
    }

    /// The text after HOST's `:`, if there is one (`[::1]:10809`: an IPv6 address in
    /// brackets, RFC 3986 §3.2.2). libnbd would hand anything there to getaddrinfo as a
    /// service name and fail later with a resolver error that does not say which part.
    private static func port(of authority: Substring) -> Substring? {
        var rest = authority
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") { rest = rest[rest.index(after: close)...] }
        guard let colon = rest.lastIndex(of: ":") else { return nil }
        return rest[rest.index(after: colon)...]
    }

    static func validate(_ uri: String, scheme: Substring) throws(OptionError) {
        let rest = uri.dropFirst(scheme.count + 3)
        switch scheme {
        case "nbd":
            guard let host = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first, !host.isEmpty else {
                throw .badValue(key: "disk", value: uri, reason: "expected nbd://HOST[:PORT]/EXPORT")
            }
            if let port = Self.port(of: host), !(UInt16(port).map { $0 > 0 } ?? false) {
                throw .badValue(key: "disk", value: uri, reason: "port '\(port)' is not a TCP port (1-65535)")
            }
        case "nbd+unix":
            guard rest.hasPrefix("/"), let q = rest.firstIndex(of: "?"),
                  rest[rest.index(after: q)...].split(separator: "&").contains(where: { $0.hasPrefix("socket=") && $0.count > 7 }) else {
                throw .badValue(key: "disk", value: uri, reason: "expected nbd+unix:///EXPORT?socket=PATH")
            }
        case "nbds", "nbds+unix":
            throw .badValue(key: "disk", value: uri, reason: "NBD over TLS is not supported; use nbd:// or nbd+unix://")
        default:
            throw .badValue(key: "disk", value: uri, reason: "unknown URI scheme '\(scheme)' (known: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH; anything else is a file path)")
        }
    }
}
