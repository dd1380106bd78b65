/// `net=stream:unix:PATH` / `net=stream:tcp:HOST:PORT`, `server=on` to listen instead of connect.
public struct StreamConfig: Equatable, Sendable {
    public enum Address: Equatable, Sendable, CustomStringConvertible {
        case unix(path: String)
        case tcp(host: String, port: UInt16)
        /// A connected socket handed over by number or name (`net=stream-fd:…`).
        case descriptor(String)

        public var description: String {
            switch self {
            case let .unix(p): "unix:\(p)"
            case let .tcp(h, p): "tcp:\(h.contains(":") ? "[\(h)]" : h):\(p)"
            case let .descriptor(d): "fd:\(d)"
            }
        }
    }

    public var address: Address
    /// Listen for one peer at a time (QEMU's `server=on`) instead of connecting.
    public var listen: Bool

    public init(address: Address, listen: Bool = false) {
        self.address = address
        self.listen = listen
    }

    /// Parses what follows `stream:` in `net=`.
    static func parse(_ text: Substring, option: String) throws(NetBackendError) -> Address {
        let value = "stream:\(text)"
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .badValue(option: option, value: value, reason: "stream:unix: needs a socket path") }
            guard path.utf8.count < 108 else { throw .badValue(option: option, value: value, reason: "socket path longer than 107 bytes") }
            return .unix(path: path)
        }
        if text.hasPrefix("tcp:") {
            let rest = text.dropFirst(4)
            let host: Substring, portText: Substring
            if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
                host = rest[rest.index(after: rest.startIndex) ..< close]
                portText = rest[rest.index(after: close)...].drop { $0 == ":" }
            } else if let colon = rest.lastIndex(of: ":") {
                host = rest[..<colon]
                portText = rest[rest.index(after: colon)...]
            } else {
                throw .badValue(option: option, value: value, reason: "expected stream:tcp:HOST:PORT")
            }
            guard let port = UInt16(portText), port > 0 else {
                throw .badValue(option: option, value: value, reason: "expected a TCP port in 1...65535")
            }
            return .tcp(host: String(host), port: port)
        }
        throw .badValue(option: option, value: value, reason: "expected stream:unix:PATH or stream:tcp:HOST:PORT")
    }
}
