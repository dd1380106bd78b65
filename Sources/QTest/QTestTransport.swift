#if canImport(Glibc)
import Glibc
#endif

/// Errors setting up the qtest transport (user input: a socket path).
public enum QTestTransportError: Error, CustomStringConvertible {
    case socket(path: String, call: String, errno: Int32)
    public var description: String {
        switch self {
        case let .socket(p, call, e): "qtest socket \(p): \(call) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// Runs a qtest session over file descriptors: stdin/stdout, or one client of a unix socket.
public enum QTestTransport {
    /// Reads request lines from `input` until end of file, answering on `output`.
    public static func serve(machine: QTestMachine, input: Int32, output: Int32) {
        let server = QTestServer(machine: machine) { line in writeAll(output, line) }
        var pending: [UInt8] = []
        var discarding = false // inside a line that was too long: drop it up to its newline
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            pending.append(contentsOf: buffer[0 ..< n])
            while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                if discarding {
                    discarding = false
                    server.reject("FAIL request longer than \(maxLineLength) bytes")
                } else {
                    server.handle(line: Substring(line))
                }
            }
            if pending.count > maxLineLength {
                pending.removeAll()
                discarding = true
            }
        }
    }

    /// The longest sensible request: a `write` of `QTestServer.maxTransfer` bytes in hex.
    static let maxLineLength = Int(QTestServer.maxTransfer) * 2 + 64

    /// Listens on a unix socket at `path`, serves the first client, then returns.
    public static func serve(machine: QTestMachine, socketPath path: String) throws(QTestTransportError) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .socket(path: path, call: "socket", errno: errno) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard path.utf8.count < capacity else { throw .socket(path: path, call: "bind", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        unlink(path)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw .socket(path: path, call: "bind", errno: errno) }
        defer { unlink(path) }
        guard listen(fd, 1) == 0 else { throw .socket(path: path, call: "listen", errno: errno) }
        let client = accept(fd, nil, nil)
        guard client >= 0 else { throw .socket(path: path, call: "accept", errno: errno) }
        defer { close(client) }
        serve(machine: machine, input: client, output: client)
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return write(fd, base + done, raw.count - done)
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return } // the client went away
            done += n
        }
    }
}
