#if canImport(Glibc)
import Glibc
#endif

/// Host memory that reads as zero until written: an anonymous private mapping, so a page
/// becomes resident only when a device first touches it, and `zero()` hands the pages back
/// to the kernel instead of writing every byte.
///
/// For a device's large, sparsely used state: the e1000 register file (128 KiB, a few pages
/// of it ever written) and the frame scratch buffers sized for the largest frame or TSO
/// send (64 KiB+ each, touched only as far as the frames that use them). Allocated and
/// zeroed with `malloc` + fill, the same buffers made 0.5 MiB of a mini guest's 11 MiB
/// resident at boot (Docs/performance.md, "Memory"). Zero until written also means no
/// stale heap bytes can reach a guest through a buffer nobody filled.
public final class ZeroFilledPages: @unchecked Sendable {
    /// Whole pages, at least the requested count.
    public let bytes: UnsafeMutableRawBufferPointer
    /// False when the mapping failed and the bytes came from the heap instead.
    private let mapped: Bool

    /// `byteCount` is the caller's buffer size, never a guest's value.
    public init(byteCount: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = max(byteCount, 1) / page + (max(byteCount, 1) % page == 0 ? 0 : 1)
        let (length, overflow) = pages.multipliedReportingOverflow(by: page)
        if !overflow, let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED {
            bytes = UnsafeMutableRawBufferPointer(start: p, count: length)
            mapped = true
        } else {
            // No mapping (address space or map count exhausted): the same zeroed bytes from
            // the heap, resident at once, and failing as any allocation does.
            bytes = .allocate(byteCount: max(byteCount, 1), alignment: 64)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            mapped = false
        }
    }

    /// Every byte reads as zero again; mapped pages stop counting as resident.
    public func zero() {
        // MADV_DONTNEED on a private anonymous mapping: the next access faults in a zero page.
        if !mapped || madvise(bytes.baseAddress, bytes.count, MADV_DONTNEED) != 0 {
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    deinit {
        if mapped { munmap(bytes.baseAddress, bytes.count) } else { bytes.deallocate() }
    }
}
