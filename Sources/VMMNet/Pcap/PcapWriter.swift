#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VMMCore

public enum PcapError: Error, Equatable, CustomStringConvertible {
    case open(path: String, errno: Int32)
    case write(path: String, errno: Int32)
    case notRegularFile(path: String)
    case danglingLink(path: String)

    public var description: String {
        switch self {
        case let .open(p, e): "cannot create pcap file '\(p)': \(String(cString: strerror(e)))"
        case let .write(p, e): "cannot write pcap file '\(p)': \(String(cString: strerror(e)))"
        case let .notRegularFile(p): "pcap file '\(p)' exists and is not a regular file"
        case let .danglingLink(p): "pcap file '\(p)' is a symbolic link to a file that does not exist"
        }
    }
}

/// Writes Ethernet frames to a classic pcap file (magic 0xa1b2c3d4: microsecond
/// timestamps, LINKTYPE_ETHERNET), the format tcpdump, tshark and Wireshark read.
///
/// Records are appended to one preallocated buffer and written out when it fills, on
/// `flush()`, and at most `flushInterval` after the last write-out, so writing a frame
/// allocates nothing. Thread-safe.
public final class PcapWriter: Sendable {
    public static let linkTypeEthernet: UInt32 = 1
    public let path: String
    public let snapLength: Int

    /// Guarded by `state`'s lock (only touched inside `withLock`).
    private nonisolated(unsafe) let buffer: UnsafeMutableRawBufferPointer
    private struct State {
        var fd: Int32
        var used = 0
        var lastFlush: UInt64
        var writeError: Int32 = 0
        /// Emptied and given its header: frames are written from then on.
        var started = false
    }
    private let state: Mutex<State>
    private let flushInterval: UInt64
    /// `path` did not exist before `init`: removed again by `close()` if the capture never
    /// started, so a command line refused after `capture=` leaves nothing behind.
    private let createdFile: Bool

    /// Opens `path` (creating it) and, unless `startLater`, empties it and writes the file
    /// header. With `startLater` an existing file is left as it is, and frames are not
    /// recorded, until `start()`: a backend's capture is opened while the command line is
    /// checked, so that a bad path is refused at once, but a refused command line must not
    /// have emptied an old capture.
    /// Only a regular file is accepted: frames are written under the device's lock, and a
    /// FIFO or a device node that stops reading would stall the NIC (O_NONBLOCK keeps the
    /// open itself from waiting for a FIFO's reader).
    public init(path: String, snapLength: Int = 262_144, bufferSize: Int = 1 << 20,
                flushIntervalNanoseconds: UInt64 = 100_000_000, startLater: Bool = false) throws(PcapError) {
        let fd: Int32, created: Bool
        switch OutputFile.open(path) {
        case let .success(opened): (fd, created) = opened
        case .failure(.danglingLink): throw .danglingLink(path: path)
        case .failure(.open(ENXIO)): throw .notRegularFile(path: path)   // a FIFO without a reader, a socket
        case let .failure(.open(e)): throw .open(path: path, errno: e)
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            Glibc.close(fd)
            if created { unlink(path) }
            throw .notRegularFile(path: path)
        }
        self.path = path
        self.snapLength = max(snapLength, 64)
        flushInterval = flushIntervalNanoseconds
        createdFile = created
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, 4096), alignment: 8)
        state = Mutex(State(fd: fd, lastFlush: MonotonicTime.nanoseconds()))
        if !startLater {
            try start()
            try flush()
        }
    }

    /// Empties the file and writes its header (struct pcap_file_header); frames are
    /// recorded from here on. Idempotent.
    public func start() throws(PcapError) {
        let error = state.withLock { s -> Int32 in
            begin(&s)
            return s.writeError
        }
        if error != 0 { throw .open(path: path, errno: error) }
    }

    private func begin(_ s: inout State) {
        guard s.fd >= 0, !s.started else { return }
        guard ftruncate(s.fd, 0) == 0 else { s.writeError = errno; return }
        s.started = true
        // magic, version 2.4, thiszone, sigfigs, snaplen, linktype.
        let header: [UInt32] = [0xA1B2_C3D4, 0x0004_0002, 0, 0, UInt32(snapLength), PcapWriter.linkTypeEthernet]
        header.withUnsafeBytes { h in buffer.copyMemory(from: h) }
        s.used = 24
    }

    deinit {
        try? close()
        buffer.deallocate()
    }

    /// Appends one frame given as a scatter list, stamped with the current wall-clock time.
    public func write(_ segments: [UnsafeRawBufferPointer]) {
        var length = 0
        for s in segments {
            let (sum, overflow) = length.addingReportingOverflow(s.count)
            guard !overflow else { return }
            length = sum
        }
        let captured = min(length, snapLength)
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let now = MonotonicTime.nanoseconds()
        // The views stay valid for this call; the lock only orders writers.
        nonisolated(unsafe) let segments = segments
        state.withLock { s in
            // Frames before `start()` are not recorded: emptying the file here would be a
            // truncate on a thread that may not make one (`MachineStart`).
            guard s.fd >= 0, s.started, let base = buffer.baseAddress else { return }
            let recordSize = 16 + captured
            if s.used + recordSize > buffer.count { drain(&s) }
            // pcap_pkthdr: seconds, microseconds, captured length, original length (host order,
            // as the magic number announces).
            let record: (UInt32, UInt32, UInt32, UInt32) = (UInt32(truncatingIfNeeded: ts.tv_sec),
                                                            UInt32(truncatingIfNeeded: ts.tv_nsec / 1000),
                                                            UInt32(captured), UInt32(truncatingIfNeeded: length))
            if recordSize > buffer.count {
                // Larger than the whole buffer: write it straight out.
                withUnsafeBytes(of: record) { r in writeAll(&s, r) }
                var left = captured
                for seg in segments where left > 0 {
                    let n = min(left, seg.count)
                    writeAll(&s, UnsafeRawBufferPointer(rebasing: seg[0 ..< n]))
                    left -= n
                }
            } else {
                withUnsafeBytes(of: record) { r in (base + s.used).copyMemory(from: r.baseAddress!, byteCount: 16) }
                s.used += 16
                var left = captured
                for seg in segments where left > 0 {
                    let n = min(left, seg.count)
                    if n > 0, let src = seg.baseAddress { (base + s.used).copyMemory(from: src, byteCount: n) }
                    s.used += n
                    left -= n
                }
            }
            if now &- s.lastFlush >= flushInterval { drain(&s); s.lastFlush = now }
        }
    }

    public func write(_ frame: UnsafeRawBufferPointer) { write([frame]) }

    /// Writes out everything buffered.
    public func flush() throws(PcapError) {
        let error = state.withLock { s -> Int32 in
            drain(&s)
            s.lastFlush = MonotonicTime.nanoseconds()
            return s.writeError
        }
        if error != 0 { throw .write(path: path, errno: error) }
    }

    /// Flushes and closes the file (removing it if it never started and `init` created
    /// it). Idempotent.
    public func close() throws(PcapError) {
        let error = state.withLock { s -> Int32 in
            guard s.fd >= 0 else { return 0 }
            drain(&s)
            Glibc.close(s.fd)
            s.fd = -1
            if !s.started && createdFile { unlink(path) }
            return s.writeError
        }
        if error != 0 { throw .write(path: path, errno: error) }
    }

    private func drain(_ s: inout State) {
        guard s.used > 0 else { return }
        writeAll(&s, UnsafeRawBufferPointer(rebasing: buffer[0 ..< s.used]))
        s.used = 0
    }

    private func writeAll(_ s: inout State, _ bytes: UnsafeRawBufferPointer) {
        guard s.fd >= 0, var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(s.fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                s.writeError = errno
                return
            }
            p += n
            left -= n
        }
    }
}
