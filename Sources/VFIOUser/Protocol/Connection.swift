#if canImport(Glibc)
import Glibc
#endif
import CLinux
import VMMCore

/// One message as it came off the socket: header, payload, and the descriptors that
/// arrived with it (owned by the receiver: close what you do not keep).
public struct VFIOUserMessage {
    public var header: VFIOUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]

    public init(header: VFIOUserHeader, payload: [UInt8], fds: [Int32] = []) {
        self.header = header; self.payload = payload; self.fds = fds
    }
}

/// A client connection: reads whole messages with their descriptors and writes replies.
/// Reading blocks on `poll` over the socket and a stop eventfd, so the server can be
/// stopped while a client is idle.
final class VFIOUserConnection {
    let fd: Int32
    private let stopFD: Int32
    /// Largest whole message accepted (header included); a bigger one ends the connection.
    let maxMessageSize: Int
    let maxFDs: Int

    init(fd: Int32, stopFD: Int32, maxMessageSize: Int, maxFDs: Int) {
        self.fd = fd; self.stopFD = stopFD; self.maxMessageSize = maxMessageSize; self.maxFDs = maxFDs
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    enum ReceiveResult {
        case message(VFIOUserMessage)
        /// The client hung up, the server is stopping, or the stream broke (with why).
        case closed(String?)
    }

    func receive() -> ReceiveResult {
        var fds: [Int32] = []
        var header = [UInt8](repeating: 0, count: VFIOUserHeader.size)
        if let problem = readExactly(&header, collecting: &fds) {
            DescriptorCloser.shared.close(fds)
            return .closed(problem)
        }
        let h: VFIOUserHeader
        do { h = try VFIOUserHeader.decode(header) } catch { DescriptorCloser.shared.close(fds); return .closed("\(error)") }
        guard h.messageSize >= UInt32(VFIOUserHeader.size), h.messageSize <= UInt32(maxMessageSize) else {
            DescriptorCloser.shared.close(fds)
            return .closed("message size \(h.messageSize) outside 16...\(maxMessageSize)")
        }
        var payload = [UInt8](repeating: 0, count: Int(h.messageSize) - VFIOUserHeader.size)
        if !payload.isEmpty, let problem = readExactly(&payload, collecting: &fds, restOfMessage: true) {
            DescriptorCloser.shared.close(fds)
            return .closed(problem)
        }
        return .message(VFIOUserMessage(header: h, payload: payload, fds: fds))
    }

    /// Fills `buffer`; nil on success, else why the connection ended ("" for a plain hang-up).
    ///
    /// A message's header is awaited with `poll` (so a stop is seen while the client is
    /// idle); the rest of a message is nearly always there already, so it is read without
    /// waiting first and `poll` runs only if the socket is empty: one system call fewer
    /// per message with a payload (every BAR access).
    private func readExactly(_ buffer: inout [UInt8], collecting fds: inout [Int32], restOfMessage: Bool = false) -> String? {
        var done = 0
        var tryFirst = restOfMessage
        // Reads that found nothing after `poll` said readable, in a row: a socket that keeps
        // saying so (out-of-band bytes, each dropped by a read) must not make this spin.
        var emptyReads = 0
        while done < buffer.count {
            if !tryFirst {
                switch StoppableWait.wait(fd, for: Int16(POLLIN), orStop: stopFD) {
                case .ready: break
                case .stopped: return "server stopping"
                case let .failed(error): return "poll: \(String(cString: strerror(error)))"
                case .timedOut: continue
                }
            }
            // Never a blocking read, even after `poll` said readable: an out-of-band byte
            // (AF_UNIX MSG_OOB) makes the socket readable and is dropped by the read, which
            // then waited for bytes that need not come, deaf to the stop (SIGTERM).
            let flags = Int32(MSG_DONTWAIT)
            tryFirst = false
            var nfds: Int32 = 0, truncated: Int32 = 0
            // The descriptors' landing place on the stack: nothing allocated per read.
            let n = withUnsafeTemporaryAllocation(of: Int32.self, capacity: Int(CLINUX_MAX_PASSED_FDS)) { got -> Int in
                let room = min(max(0, maxFDs - fds.count), got.count)
                let n = buffer.withUnsafeMutableBytes { raw -> Int in
                    guard let base = raw.baseAddress, let slots = got.baseAddress else { return 0 }
                    return clinux_recv_with_fds(fd, base + done, raw.count - done, slots, Int32(room), &nfds, &truncated, flags)
                }
                let came = min(max(Int(nfds), 0), got.count)
                fds.append(contentsOf: got.prefix(min(came, room)))
                if came > room { DescriptorCloser.shared.close(Array(got[room ..< came])) }
                return n
            }
            if n < 0 {
                if errno == EAGAIN {
                    emptyReads += 1
                    if emptyReads > 64 { return "the socket stays readable with nothing to read (out-of-band data?)" }
                    continue
                }
                if errno == EINTR { continue }
                return "recvmsg: \(String(cString: strerror(errno)))"
            }
            emptyReads = 0
            if n == 0 { return done == 0 && fds.isEmpty ? "" : "client closed the socket mid-message" }
            if truncated != 0 { return "more than \(maxFDs) file descriptors with one message" }
            done += n
        }
        return nil
    }

    /// Sends a reply; false if the client is gone.
    @discardableResult
    func send(_ header: VFIOUserHeader, payload: [UInt8]) -> Bool {
        var bytes = header.encoded()
        bytes.append(contentsOf: payload)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw -> Int in
                guard let base = raw.baseAddress else { return -1 }
                return clinux_send_with_fds(fd, base + done, raw.count - done, nil, 0)
            }
            // EAGAIN here is the send timeout: a client that stopped reading is dropped.
            if n < 0 { if errno == EINTR { continue }; return false }
            done += n
        }
        return true
    }
}
