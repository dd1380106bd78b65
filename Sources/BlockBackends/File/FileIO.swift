#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// The system calls behind one request, run on a worker thread. Each returns 0 or an
/// errno. Short transfers and EINTR are retried; a read past the end of the file reads
/// zeroes (the file may have been shrunk behind our back; the guest sees a full read).
struct FileIO {
    let fd: Int32
    /// O_DIRECT: buffers must be aligned, so unaligned guest buffers go through `scratch`.
    let direct: Bool
    let scratch: AlignedBuffer

    /// Alignment for O_DIRECT buffers: a page satisfies every device's logical block size.
    static let directAlignment = 4096
    /// Linux's IOV_MAX: the most iovecs one preadv/pwritev takes.
    static let maxIOVecs = 1024

    // MARK: read / write

    func read(offset: UInt64, into segments: [UnsafeMutableRawBufferPointer]) -> Int32 {
        let raw = segments.map { UnsafeRawBufferPointer($0) }
        if direct && !FileIO.isAligned(raw) { return bounced(offset: offset, raw, write: false) }
        return transfer(offset: offset, raw, write: false)
    }

    func write(offset: UInt64, from segments: [UnsafeRawBufferPointer]) -> Int32 {
        if direct && !FileIO.isAligned(segments) { return bounced(offset: offset, segments, write: true) }
        return transfer(offset: offset, segments, write: true)
    }

    /// Whether O_DIRECT can take the segments as they are: addresses and lengths in whole
    /// pages. Linux wants each segment's length a multiple of the device's logical block
    /// size (`bdev_iter_is_aligned` in blkdev_dio_unaligned, iomap_dio_bio_iter), which is
    /// 4096 on 4K-sector disks and not known for a file's filesystem; a page fits every
    /// device, and Linux guests' page-cache I/O comes in pages anyway. Others are bounced.
    static func isAligned(_ segments: [UnsafeRawBufferPointer]) -> Bool {
        segments.allSatisfy { s in
            s.count % directAlignment == 0 && (s.baseAddress.map { UInt(bitPattern: $0) % UInt(directAlignment) == 0 } ?? (s.count == 0))
        }
    }

    /// preadv/pwritev straight into/out of the segments, resuming after short transfers.
    private func transfer(offset: UInt64, _ segments: [UnsafeRawBufferPointer], write: Bool) -> Int32 {
        var iov = segments.filter { $0.count > 0 }.map {
            iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
        }
        guard let total = ScatterList.totalLength(iov.map(\.iov_len)), ScatterList.end(offset: offset, length: total) != nil else { return EINVAL }
        var position = off_t(offset)   // fits: checked by `end` above
        var first = 0
        while first < iov.count {
            let count = min(iov.count - first, FileIO.maxIOVecs)
            let n = iov.withUnsafeMutableBufferPointer { p -> Int in
                let base = p.baseAddress.map { $0 + first }
                return write ? pwritev(fd, base, Int32(count), position) : preadv(fd, base, Int32(count), position)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 {
                // EOF on read: the rest is zeroes. A write that writes nothing would loop forever.
                guard !write else { return EIO }
                for i in first ..< iov.count { iov[i].iov_base?.initializeMemory(as: UInt8.self, repeating: 0, count: iov[i].iov_len) }
                return 0
            }
            position += n
            var done = n
            while done > 0, first < iov.count {
                if done >= iov[first].iov_len {
                    done -= iov[first].iov_len
                    first += 1
                } else {
                    iov[first].iov_base = iov[first].iov_base.map { $0 + done }
                    iov[first].iov_len -= done
                    done = 0
                }
            }
        }
        return 0
    }

    /// O_DIRECT with unaligned guest buffers: through the aligned scratch buffer, a chunk at a time.
    private func bounced(offset: UInt64, _ segments: [UnsafeRawBufferPointer], write: Bool) -> Int32 {
        guard let total = ScatterList.totalLength(segments.map(\.count)), ScatterList.end(offset: offset, length: total) != nil else { return EINVAL }
        var done = 0
        while done < total {
            let chunk = min(total - done, scratch.count)
            let buffer = UnsafeRawBufferPointer(rebasing: scratch.bytes[0 ..< chunk])
            if write { ScatterCopy.gather(segments, from: done, into: scratch.bytes, count: chunk) }
            let e = transfer(offset: offset + UInt64(done), [buffer], write: write)
            guard e == 0 else { return e }
            if !write { ScatterCopy.scatter(UnsafeRawBufferPointer(buffer), into: segments, at: done) }
            done += chunk
        }
        return 0
    }

    // MARK: flush, discard, zeroes

    func flush() -> Int32 {
        while fdatasync(fd) != 0 {
            if errno != EINTR { return errno }
        }
        return 0
    }

    func punchHole(offset: UInt64, length: UInt64) -> Int32 {
        fallocate(CLINUX_FALLOC_PUNCH_HOLE | CLINUX_FALLOC_KEEP_SIZE, offset: offset, length: length)
    }

    func zeroRange(offset: UInt64, length: UInt64) -> Int32 {
        fallocate(CLINUX_FALLOC_ZERO_RANGE | CLINUX_FALLOC_KEEP_SIZE, offset: offset, length: length)
    }

    private func fallocate(_ mode: Int32, offset: UInt64, length: UInt64) -> Int32 {
        guard let o = Int64(exactly: offset), let l = Int64(exactly: length), o.addingReportingOverflow(l).overflow == false else { return EINVAL }
        guard l > 0 else { return 0 }
        while clinux_fallocate(fd, mode, o, l) != 0 {
            if errno != EINTR { return errno }
        }
        return 0
    }

    /// Writes zeroes from the (zeroed) scratch buffer, a chunk at a time: the fallback when
    /// the filesystem cannot zero a range itself.
    func writeZeroes(offset: UInt64, length: UInt64) -> Int32 {
        guard let length = Int(exactly: length), ScatterList.end(offset: offset, length: length) != nil else { return EINVAL }
        scratch.bytes.initializeMemory(as: UInt8.self, repeating: 0)
        var done = 0
        while done < length {
            let chunk = min(length - done, scratch.count)
            let e = transfer(offset: offset + UInt64(done), [UnsafeRawBufferPointer(rebasing: scratch.bytes[0 ..< chunk])], write: true)
            guard e == 0 else { return e }
            done += chunk
        }
        return 0
    }
}

/// A page-aligned buffer owned by one worker thread (O_DIRECT bounces, zero writes).
final class AlignedBuffer: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    var count: Int { bytes.count }

    init(count: Int) {
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: FileIO.directAlignment)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}

/// Copies between a scatter list and one contiguous buffer.
enum ScatterCopy {
    /// Copies `count` bytes of `segments`, starting `skip` bytes in, to the start of `out`.
    static func gather(_ segments: [UnsafeRawBufferPointer], from skip: Int, into out: UnsafeMutableRawBufferPointer, count: Int) {
        var skip = skip, copied = 0
        for s in segments where copied < count && copied < out.count {
            if skip >= s.count { skip -= s.count; continue }
            let n = min(s.count - skip, count - copied, out.count - copied)
            if let src = s.baseAddress, let dst = out.baseAddress { (dst + copied).copyMemory(from: src + skip, byteCount: n) }
            copied += n
            skip = 0
        }
    }

    /// Copies `data` into `segments` starting `skip` bytes in.
    static func scatter(_ data: UnsafeRawBufferPointer, into segments: [UnsafeRawBufferPointer], at skip: Int) {
        var skip = skip, copied = 0
        for s in segments where copied < data.count {
            if skip >= s.count { skip -= s.count; continue }
            let n = min(s.count - skip, data.count - copied)
            if let dst = s.baseAddress, let src = data.baseAddress {
                UnsafeMutableRawPointer(mutating: dst + skip).copyMemory(from: src + copied, byteCount: n)
            }
            copied += n
            skip = 0
        }
    }
}
