#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import VMMCore

/// The client's memory as the device sees it: DMA_MAP regions that come with a file
/// descriptor are mapped shared into this process and inserted into the device's
/// `GuestMemory`; regions without one (or read-only ones) are remembered only so their unmap is accepted
/// (device DMA there fails as "not RAM": this server never round-trips DMA_READ/WRITE,
/// because QEMU answers those from the main loop a vCPU waiting on us may hold).
///
/// Every change happens with the device lock held (see `GuestMemory`), so a device
/// never has an unmapped page in hand during one access; rings kept across accesses
/// follow the layout (`RingReachability`). A device may also hold pointers outside its
/// lock (`GuestMemory.lentOut`: a block request a backend thread is filling): the pages of
/// a region unmapped meanwhile are replaced, at the same address, by private zero pages
/// that nobody else sees, and unmapped for good only once nothing is lent out. A client
/// that unmaps memory under in-flight I/O gets that I/O's data lost, never this process
/// faulted or another mapping written; the devices fail such I/O (virtio-blk: IOERR).
final class DMAMappings {
    let memory: GuestMemory
    private let lock: DeviceLock
    /// Every region the client announced, by address: those mapped into `memory` and those
    /// only remembered (no descriptor, or read-only). What each was mapped with is kept
    /// so that the same mapping announced again is accepted as the one there
    /// (libvfio-user's `dma_controller_add_region` returns the existing region when
    /// address, size, offset, file and protection all match, and EINVAL when one differs).
    private var announced: [UInt64: Announcement] = [:]

    private struct Announcement: Equatable {
        let size: UInt64
        let fileOffset: UInt64
        let protection: UInt32
        /// Device and inode of the descriptor's file; nil without one.
        let file: FileIdentity?

        struct FileIdentity: Equatable { let device: UInt64, inode: UInt64 }

        init(_ m: VFIOUserRequest.DMAMap, fd: Int32?) {
            size = m.size
            fileOffset = m.fileOffset
            protection = m.flags & (VFIOUserRequest.DMAMap.readable | VFIOUserRequest.DMAMap.writable)
            var st = stat()
            file = fd.flatMap { fstat($0, &st) == 0 ? FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) : nil }
        }
    }
    /// Address ranges of unmapped regions still reserved, for pointers lent out then.
    private var retired: [(host: UnsafeMutableRawPointer, size: Int)] = []
    var retiredCount: Int { retired.count }
    let limit: Int
    /// Bytes mapped, retired ranges included, counted against the budget all the devices
    /// of the process share.
    let budget: DMAByteBudget

    init(memory: GuestMemory, lock: DeviceLock, limit: Int, budget: DMAByteBudget) {
        self.memory = memory; self.lock = lock; self.limit = limit; self.budget = budget
    }

    func map(_ m: VFIOUserRequest.DMAMap, fd: Int32?) throws(VFIOUserError) {
        defer { if let fd { DescriptorCloser.shared.close(fd) } } // the mapping keeps the memory; the descriptor is not needed
        reclaimRetired()
        guard m.size > 0, m.size <= UInt64(Int.max) else { throw .malformed("DMA_MAP of size \(m.size)") }
        let (_, wraps) = m.address.addingReportingOverflow(m.size - 1)
        guard !wraps else { throw .malformed("DMA_MAP range wraps past 2^64") }
        let announcement = Announcement(m, fd: fd)
        if let existing = announced[m.address], existing.size == m.size {
            guard existing == announcement else {
                throw .malformed("DMA_MAP 0x\(String(m.address, radix: 16))+0x\(String(m.size, radix: 16)) repeats a mapping with another file, offset or protection")
            }
            return
        }
        // Retired ranges count too: a client that unmaps under stuck I/O (and reconnects)
        // cannot make this process hold more than `limit` mappings.
        guard announced.count + retired.count < limit else {
            throw .limit(retired.isEmpty ? "more than \(limit) DMA regions"
                                         : "more than \(limit) DMA regions, \(retired.count) of them unmapped with device I/O still in flight")
        }
        // Otherwise no region may overlap another, with a descriptor or without
        // (libvfio-user's `dma_controller_add_region` answers EINVAL; the kernel's type1
        // IOMMU EEXIST).
        // Regions without one were only appended, so a second announcement of a range
        // was accepted and then took two unmaps, and a backed region could sit on one.
        let last = m.address &+ (m.size &- 1)
        func overlaps(_ base: UInt64, _ size: UInt64) -> Bool { base <= last && base &+ (size &- 1) >= m.address }
        guard !announced.contains(where: { overlaps($0.key, $0.value.size) }) else {
            throw .malformed("DMA_MAP 0x\(String(m.address, radix: 16))+0x\(String(m.size, radix: 16)) overlaps a region already mapped")
        }
        // A read-only region cannot be mapped PROT_READ: a device write there (a receive
        // buffer in ROM) would fault the process. The device gets no access to it instead,
        // as to regions without a descriptor (QEMU's ROMs and non-memfd RAM).
        let writable = m.flags & VFIOUserRequest.DMAMap.writable != 0
        guard let fd, writable else {
            announced[m.address] = announcement
            return
        }
        guard m.address & 0xFFF == 0, m.size & 0xFFF == 0, m.fileOffset & 0xFFF == 0 else {
            throw .malformed("DMA_MAP not page aligned (address 0x\(String(m.address, radix: 16)), size 0x\(String(m.size, radix: 16)))")
        }
        try checkBacking(fd, offset: m.fileOffset, size: m.size)
        guard budget.reserve(m.size) else {
            throw .limit("DMA_MAP of 0x\(String(m.size, radix: 16)) bytes: more than \(budget.limit >> 40) TiB mapped in all")
        }
        guard m.fileOffset <= UInt64(Int.max),
              let p = mmap(nil, Int(m.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(m.fileOffset)), p != MAP_FAILED else {
            let error = errno
            budget.release(m.size)
            throw .system("DMA_MAP mmap of \(m.size) bytes", errno: error)
        }
        // Guest memory is not part of a core dump of this process.
        madvise(p, Int(m.size), MADV_DONTDUMP)
        do {
            try lock.withLock { () throws(GuestMemoryLayoutError) in
                try memory.insert(GuestMemoryRegion(base: GuestAddress(m.address), size: m.size, host: p))
            }
        } catch {
            munmap(p, Int(m.size))
            budget.release(m.size)
            throw .malformed("DMA_MAP: \(error)")
        }
        announced[m.address] = announcement
    }

    /// The descriptor must be a memory file that holds the whole range and cannot shrink.
    private func checkBacking(_ fd: Int32, offset: UInt64, size: UInt64) throws(VFIOUserError) {
        // A file the client could shrink later would turn device DMA into SIGBUS: only
        // memfds sealed against shrinking (QEMU's memory-backend-memfd default) are taken.
        // The seals first: once SHRINK is sealed the size can only grow, so the size read
        // below still holds when the range is mapped (checked the other way round, a
        // client thread could shrink the file and seal it in between).
        let seals = fcntl(fd, CLINUX_F_GET_SEALS)
        guard seals >= 0, seals & CLINUX_F_SEAL_SHRINK != 0 else {
            throw .unsupported("DMA_MAP memory that can shrink: use memory-backend-memfd (seal=on, the default)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system("DMA_MAP fstat", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .malformed("DMA_MAP descriptor is not a memory file") }
        let (end, wraps) = offset.addingReportingOverflow(size)
        guard !wraps, st.st_size >= 0, end <= UInt64(st.st_size) else {
            throw .malformed("DMA_MAP range 0x\(String(offset, radix: 16))+0x\(String(size, radix: 16)) beyond the file's \(st.st_size) bytes")
        }
    }

    /// Unmaps every region wholly inside the range (everything with `unmapsAll`), as the
    /// kernel's VFIO type1 IOMMU does (`vfio_dma_do_unmap`), which QEMU's client relies on:
    /// it maps virtio-mem memory a granule at a time and unmaps many with one call. A range
    /// that covers only part of a region is refused and removes nothing, as there (it once
    /// removed the regions inside and reported success, leaving the one it cut).
    func unmap(_ u: VFIOUserRequest.DMAUnmap) throws(VFIOUserError) {
        reclaimRetired()
        if u.unmapsAll {
            unmapAll()
            return
        }
        let (last, wraps) = u.address.addingReportingOverflow(u.size == 0 ? 0 : u.size - 1)
        guard u.size > 0, !wraps else { throw .malformed("DMA_UNMAP of size \(u.size) at 0x\(String(u.address, radix: 16))") }
        /// Whether `base…base+size-1` meets the range without lying wholly inside it.
        func cut(_ base: UInt64, _ size: UInt64) -> Bool {
            let end = base &+ (size &- 1)
            return base <= last && end >= u.address && (base < u.address || end > last)
        }
        let range = "0x\(String(u.address, radix: 16))+0x\(String(u.size, radix: 16))"
        guard !announced.contains(where: { cut($0.key, $0.value.size) }) else {
            throw .malformed("DMA_UNMAP \(range) covers only part of a mapping")
        }
        let before = announced.count
        func inside(_ base: UInt64, _ size: UInt64) -> Bool { base >= u.address && base - u.address <= u.size && size <= u.size - (base - u.address) }
        announced = announced.filter { !inside($0.key, $0.value.size) }
        release(lock.withLock { memory.remove(base: u.address, size: u.size) })
        guard announced.count != before else { throw .notFound("DMA_UNMAP \(range) matches no mapping") }
    }

    /// The client went away or asked to drop everything.
    func unmapAll() {
        announced.removeAll()
        release(lock.withLock { memory.remove(base: 0, size: nil) })
    }

    /// Unmaps removed regions, or retires them while pointers are lent out.
    private func release(_ removed: [GuestMemoryRegion]) {
        for r in removed {
            let size = Int(r.size)   // mapped above, so it fits
            // Same address, private zero pages: the client's file is let go now, and a
            // lent pointer still lands in memory of ours.
            let replaced = mmap(r.host, size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            if replaced == MAP_FAILED { _ = madvise(r.host, size, MADV_DONTNEED) }
            retired.append((r.host, size))
        }
        reclaimRetired()
    }

    /// Unmaps the retired ranges once no device holds a pointer outside its lock. Under the
    /// device lock: a device lends only under it, and only from regions still present.
    private func reclaimRetired() {
        guard !retired.isEmpty else { return }
        lock.withLock {
            guard memory.lentOut.load(ordering: .relaxed) == 0 else { return }
            for r in retired { munmap(r.host, r.size) }
            budget.release(retired.reduce(UInt64(0)) { $0 + UInt64($1.size) })
            retired.removeAll()
        }
    }

    deinit { unmapAll() }
}

/// The most bytes the served devices of one process may have mapped at once. Sealed
/// memfds can be sparse and their mappings reserve nothing, so without a limit a client
/// could fill the process's 128 TiB of address space with a few messages, and the next
/// allocation anywhere in it would fail; a limit per device let eight served devices do
/// that between them. 16 TiB is beyond any guest a served device meets.
final class DMAByteBudget: Sendable {
    static let process = DMAByteBudget(limit: 1 << 44)

    let limit: UInt64
    private let mapped = Mutex<UInt64>(0)

    init(limit: UInt64) { self.limit = limit }

    var bytesMapped: UInt64 { mapped.withLock { $0 } }

    /// Counts `size` more bytes if they fit.
    func reserve(_ size: UInt64) -> Bool {
        mapped.withLock { m in
            guard size <= limit, m <= limit - size else { return false }
            m += size
            return true
        }
    }

    func release(_ size: UInt64) { mapped.withLock { $0 -= min($0, size) } }
}
