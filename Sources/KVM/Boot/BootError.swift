#if canImport(Glibc)
import Glibc
#endif

/// A kernel, initrd or command line this machine cannot boot. User input (or a file the
/// user named), so every case says which file and what is wrong with it.
public enum BootError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, errno: Int32)
    case notARegularFile(path: String)
    case notAKernel(path: String)
    case badELF(path: String, reason: String)
    case noPVHEntry(path: String)
    case badBzImage(path: String, reason: String)
    case doesNotFit(what: String, size: UInt64)
    case commandLineTooLong(length: Int, limit: Int)

    public var description: String {
        switch self {
        case let .unreadable(p, e): "cannot read \(p): \(String(cString: strerror(e)))"
        case let .notARegularFile(p): "\(p) is not a regular file"
        case let .notAKernel(p): "\(p) is not a kernel (expected an ELF with a PVH entry note or a bzImage)"
        case let .badELF(p, r): "\(p): bad ELF kernel: \(r)"
        case let .noPVHEntry(p): "\(p): ELF kernel has no PVH entry point (Xen ELF note 18, XEN_ELFNOTE_PHYS32_ENTRY)"
        case let .badBzImage(p, r): "\(p): bad bzImage: \(r)"
        case let .doesNotFit(w, s): "\(w) (\(s) bytes) does not fit in guest memory; give the VM more --memory"
        case let .commandLineTooLong(l, m): "--cmdline is \(l) bytes; this kernel accepts at most \(m)"
        }
    }
}

/// Reads a whole file the user named, refusing one larger than `limit` bytes (the guest's
/// memory: nothing larger can be loaded) before anything is allocated for it.
func readWholeFile(_ path: String, limit: UInt64) throws(BootError) -> [UInt8] {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer; a FIFO, a device or
    // a directory is refused before anything is read (a regular file reads the same).
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw .unreadable(path: path, errno: errno) }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw .unreadable(path: path, errno: errno) }
    guard st.st_mode & S_IFMT == S_IFREG else { throw .notARegularFile(path: path) }
    guard st.st_size >= 0, UInt64(st.st_size) <= limit else { throw .doesNotFit(what: path, size: UInt64(max(st.st_size, 0))) }
    let size = Int(st.st_size)
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = bytes.withUnsafeMutableBytes { b -> Int in
            guard let base = b.baseAddress else { return 0 }
            return read(fd, base + done, size - done)
        }
        if n < 0 {
            if errno == EINTR { continue }
            throw .unreadable(path: path, errno: errno)
        }
        if n == 0 { break }
        done += n
    }
    guard done == size else { throw .unreadable(path: path, errno: EIO) }
    return bytes
}

/// Little-endian reads from a file image that never trap: out of range reads give nil.
struct ByteReader {
    let bytes: [UInt8]

    func u8(_ o: UInt64) -> UInt8? { o < UInt64(bytes.count) ? bytes[Int(o)] : nil }

    func le<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ o: UInt64) -> T? {
        let n = UInt64(MemoryLayout<T>.size)
        let (end, overflow) = o.addingReportingOverflow(n)
        guard !overflow, end <= UInt64(bytes.count) else { return nil }
        var v: T = 0
        for i in 0 ..< Int(n) { v |= T(bytes[Int(o) + i]) << (8 * i) }
        return v
    }

    func u16(_ o: UInt64) -> UInt16? { le(UInt16.self, o) }
    func u32(_ o: UInt64) -> UInt32? { le(UInt32.self, o) }
    func u64(_ o: UInt64) -> UInt64? { le(UInt64.self, o) }

    /// `[offset, offset+length)` when it lies inside the image.
    func range(_ offset: UInt64, _ length: UInt64) -> Range<Int>? {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(bytes.count) else { return nil }
        return Int(offset) ..< Int(end)
    }
}
