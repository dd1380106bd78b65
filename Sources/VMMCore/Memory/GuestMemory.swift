#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// One contiguous piece of guest RAM: anonymous host memory the VMM owns, or a mapping
/// someone else handed over (a vfio-user client's memory file, mapped by the platform).
public struct GuestMemoryRegion: @unchecked Sendable {
    public let base: GuestAddress
    public let size: UInt64
    /// Host address of the first byte, valid while the region is in its `GuestMemory`.
    public let host: UnsafeMutableRawPointer

    public init(base: GuestAddress, size: UInt64, host: UnsafeMutableRawPointer) {
        self.base = base; self.size = size; self.host = host
    }
    /// One past the last guest address, as a full-width value (a region may end exactly at 2^64).
    var endExclusive: UInt64 { base.raw &+ size } // safe: checked when the region is created

    @inlinable func contains(_ address: UInt64) -> Bool {
        address >= base.raw && address - base.raw < size
    }
}

/// Errors creating guest memory (user input: the memory size and layout).
public enum GuestMemoryLayoutError: Error, CustomStringConvertible, Equatable {
    case emptyRegion(base: UInt64)
    case overlapping(base: UInt64)
    case wraps(base: UInt64, size: UInt64)
    case mmapFailed(size: UInt64, errno: Int32)
    case tooManyRegions(limit: Int)

    public var description: String {
        switch self {
        case let .emptyRegion(b): "memory region at 0x\(String(b, radix: 16)) has size 0"
        case let .overlapping(b): "memory region at 0x\(String(b, radix: 16)) overlaps another"
        case let .wraps(b, s): "memory region 0x\(String(b, radix: 16))+0x\(String(s, radix: 16)) wraps past 2^64"
        case let .mmapFailed(s, e): "cannot map \(s >> 20) MiB of guest memory: \(String(cString: strerror(e)))"
        case let .tooManyRegions(l): "more than \(l) guest memory regions"
        }
    }
}

/// The guest's RAM: the VMM process owns it (anonymous `mmap`) and is the only
/// authority on which guest-physical ranges are RAM.
///
/// `hostRange(_:length:)` is bhyve's `paddr_guest2host` done safely: it hands out a host
/// view only when the *whole* range is RAM inside one region and otherwise throws a
/// typed error — never a null pointer, never a trap. Everything else (typed loads and
/// stores, bulk copies that may cross adjacent regions, scatter-gather) is built on it.
///
/// Memory made by `init(layout:)` is fixed for the VM's life. Memory made by
/// `init(borrowedRegionLimit:)` starts empty and changes as a peer maps and unmaps its
/// regions (vfio-user's `DMA_MAP`/`DMA_UNMAP`); the platform changes it only while
/// holding the lock of every device that uses it, and devices touch guest memory only
/// under their lock, so a device is never mid-copy in a region being unmapped: after
/// the unmap its next access fails as `notRAM`, never touching an unmapped page.
public final class GuestMemory: @unchecked Sendable {
    public private(set) var regions: [GuestMemoryRegion]
    /// Moves whenever `insert` or `remove` changes the regions (a vfio-user client's
    /// DMA_MAP/DMA_UNMAP). A host view kept across calls (a virtqueue's rings) is valid only
    /// for the generation it was taken in; read with the device lock held.
    public private(set) var layoutGeneration: UInt64 = 0
    /// Moves only when `remove` takes regions away: host pointers taken before may then
    /// point at pages that are gone (what a request in flight checks on completion).
    public private(set) var removals: UInt64 = 0
    /// Host pointers into this memory that a device holds outside its lock (a block
    /// request's buffers while a backend thread reads or writes them, its status byte until
    /// completion). While non-zero, the owner of borrowed regions must not unmap a removed
    /// region's pages (`Sources/VFIOUser/Server/DMAMappings.swift` retires them instead).
    public let lentOut = Atomic<Int>(0)
    /// Whether this object mapped the regions (and unmaps them in `deinit`).
    private let ownsRegions: Bool
    /// Most borrowed regions at once (each access scans them).
    public let regionLimit: Int

    /// Maps each `(base, size)` as anonymous, zero-filled memory.
    public init(layout: [(base: UInt64, size: UInt64)]) throws(GuestMemoryLayoutError) {
        // Validate the whole layout before mapping anything, so a refused layout leaves nothing mapped.
        let sorted = layout.sorted(by: { $0.base < $1.base })
        var previousEnd: UInt64?
        for (base, size) in sorted {
            guard size > 0 else { throw .emptyRegion(base: base) }
            let (last, wraps) = base.addingReportingOverflow(size - 1)
            guard !wraps else { throw .wraps(base: base, size: size) }
            if let end = previousEnd, base <= end { throw .overlapping(base: base) }
            previousEnd = last
        }
        var built: [GuestMemoryRegion] = []
        for (base, size) in sorted {
            guard size <= UInt64(Int.max),
                  let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                  p != MAP_FAILED
            else {
                let e = errno
                for r in built { munmap(r.host, Int(r.size)) }
                throw .mmapFailed(size: size, errno: e)
            }
            // A core dump of the VMM must not carry the guest's memory (Docs/security.md).
            _ = madvise(p, Int(size), MADV_DONTDUMP)
            built.append(GuestMemoryRegion(base: GuestAddress(base), size: size, host: p))
        }
        regions = built
        ownsRegions = true
        regionLimit = built.count
    }

    /// Empty memory whose regions someone else maps (`insert`) and unmaps (`remove`).
    public init(borrowedRegionLimit: Int) {
        regions = []
        ownsRegions = false
        regionLimit = max(0, borrowedRegionLimit)
    }

    /// Adds a borrowed region. Refused when it is empty, wraps, overlaps a region already
    /// present, or the limit is reached. Call only with every user's device lock held.
    public func insert(_ region: GuestMemoryRegion) throws(GuestMemoryLayoutError) {
        guard !ownsRegions else { throw .overlapping(base: region.base.raw) }
        guard region.size > 0 else { throw .emptyRegion(base: region.base.raw) }
        let (_, wraps) = region.base.raw.addingReportingOverflow(region.size - 1)
        guard !wraps else { throw .wraps(base: region.base.raw, size: region.size) }
        guard regions.count < regionLimit else { throw .tooManyRegions(limit: regionLimit) }
        let last = region.base.raw + (region.size - 1)
        if regions.contains(where: { $0.base.raw <= last && region.base.raw <= $0.base.raw + ($0.size - 1) }) {
            throw .overlapping(base: region.base.raw)
        }
        var next = regions
        next.append(region)
        next.sort { $0.base.raw < $1.base.raw }
        regions = next
        layoutGeneration &+= 1
    }

    /// A device now holds `count` host pointers into this memory outside its lock.
    public func lend(_ count: Int = 1) { lentOut.add(count, ordering: .relaxed) }
    /// ...and has stopped using them.
    public func giveBack(_ count: Int = 1) { lentOut.subtract(count, ordering: .relaxed) }

    /// Removes the borrowed regions that lie wholly inside `[base, base+size)` (all of
    /// them when `size` is nil) and returns them for the caller to unmap. Call only with
    /// every user's device lock held.
    public func remove(base: UInt64, size: UInt64?) -> [GuestMemoryRegion] {
        guard !ownsRegions else { return [] }
        let inside: (GuestMemoryRegion) -> Bool = { r in
            guard let size else { return true }
            guard r.base.raw >= base else { return false }
            let start = r.base.raw - base
            return start <= size && r.size <= size - start
        }
        let removed = regions.filter(inside)
        guard !removed.isEmpty else { return [] }
        regions.removeAll(where: inside)
        layoutGeneration &+= 1
        removals &+= 1
        return removed
    }

    /// The usual PC layout: RAM from 0 up to the 32-bit PCI hole, the rest above 4 GiB.
    public convenience init(pcRAMSize size: UInt64) throws(GuestMemoryLayoutError) {
        try self.init(layout: PCMemoryMap.ramLayout(size: size))
    }

    deinit {
        if ownsRegions { for r in regions { munmap(r.host, Int(r.size)) } }
    }

    /// Total bytes of RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    // MARK: The mapper

    /// A host view of `[address, address+length)`, only when the whole range is RAM in one
    /// region. A zero-length range is always valid and touches nothing.
    @inlinable
    public func hostRange(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        if let view = hostRangeIfRAM(address, length: length) { return view }
        if address.raw.addingReportingOverflow(length - 1).overflow { throw .wraps(address: address.raw, length: length) }
        throw .notRAM(address: address.raw, length: length)
    }

    /// `hostRange` for the datapath, where any failure is taken the same way (the buffer is
    /// not RAM to the device): nil where it throws. Inlined into the caller: the call, and
    /// the error paths a throwing function carries, cost as much as the lookup itself.
    @inlinable @inline(__always)
    public func hostRangeIfRAM(_ address: GuestAddress, length: UInt64) -> UnsafeMutableRawBufferPointer? {
        if length == 0 { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        if address.raw.addingReportingOverflow(length - 1).overflow { return nil }
        for r in regions where r.contains(address.raw) {
            let offset = address.raw - r.base.raw
            guard length <= r.size - offset else { return nil }
            return UnsafeMutableRawBufferPointer(start: r.host + Int(offset), count: Int(length))
        }
        return nil
    }

    /// Whether the whole range is RAM (possibly across adjacent regions).
    public func isRAM(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? forEachChunk(address, length: length) { _, _ in }) != nil
    }

    /// Walks `[address, address+length)` as host chunks, crossing adjacent regions.
    /// Validates the whole range before calling `body` once, so a failing copy has no side effect.
    @inlinable
    public func forEachChunk(_ address: GuestAddress, length: UInt64,
                             _ body: (UnsafeMutableRawBufferPointer, _ offset: Int) throws(GuestMemoryError) -> Void) throws(GuestMemoryError) {
        if length == 0 { return }
        let (_, wraps) = address.raw.addingReportingOverflow(length - 1)
        if wraps { throw .wraps(address: address.raw, length: length) }
        // Fast path: one region.
        if let whole = try? hostRange(address, length: length) {
            try body(whole, 0)
            return
        }
        var chunks: [(UnsafeMutableRawBufferPointer, Int)] = []
        var cursor = address.raw
        var remaining = length
        var done = 0
        while remaining > 0 {
            guard let r = regions.first(where: { $0.contains(cursor) }) else {
                throw .notRAM(address: address.raw, length: length)
            }
            let offset = cursor - r.base.raw
            let n = min(remaining, r.size - offset)
            chunks.append((UnsafeMutableRawBufferPointer(start: r.host + Int(offset), count: Int(n)), done))
            done += Int(n)
            remaining -= n
            cursor = cursor &+ n // cannot wrap: checked above
        }
        for (chunk, off) in chunks { try body(chunk, off) }
    }

    // MARK: Bulk copies

    /// Copies `bytes` into guest memory at `address` (may cross adjacent regions).
    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        try forEachChunk(address, length: UInt64(bytes.count)) { chunk, off throws(GuestMemoryError) in
            ByteCopy.copy(to: chunk, from: UnsafeRawBufferPointer(rebasing: bytes[off ..< off + chunk.count]))
        }
    }

    /// Copies guest memory at `address` into `buffer` (may cross adjacent regions).
    public func read(into buffer: UnsafeMutableRawBufferPointer, from address: GuestAddress) throws(GuestMemoryError) {
        try forEachChunk(address, length: UInt64(buffer.count)) { chunk, off throws(GuestMemoryError) in
            ByteCopy.copy(to: UnsafeMutableRawBufferPointer(rebasing: buffer[off ..< off + chunk.count]), from: UnsafeRawBufferPointer(chunk))
        }
    }

    public func writeBytes(_ bytes: [UInt8], at address: GuestAddress) throws(GuestMemoryError) {
        let result = bytes.withUnsafeBytes { b in Result { () throws(GuestMemoryError) in try write(b, at: address) } }
        try result.get()
    }

    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .notRAM(address: address.raw, length: 0) }
        try forEachChunk(address, length: UInt64(count)) { _, _ in } // validate before allocating
        var out = [UInt8](repeating: 0, count: count)
        let result = out.withUnsafeMutableBytes { b in Result { () throws(GuestMemoryError) in try read(into: b, from: address) } }
        try result.get()
        return out
    }

    public func fill(_ address: GuestAddress, length: UInt64, with byte: UInt8) throws(GuestMemoryError) {
        try forEachChunk(address, length: length) { chunk, _ in
            if let base = chunk.baseAddress { memset(base, Int32(byte), chunk.count) }
        }
    }

    // MARK: Little-endian typed access

    /// Loads a little-endian integer. Unaligned and region-crossing addresses work.
    @inlinable
    public func load<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        if let r = try? hostRange(address, length: UInt64(MemoryLayout<T>.size)) {
            return T(littleEndian: r.loadUnaligned(as: T.self))
        }
        var v: T = 0
        try withUnsafeMutableBytes(of: &v) { (b) throws(GuestMemoryError) in try read(into: b, from: address) }
        return T(littleEndian: v)
    }

    /// Stores a little-endian integer. Unaligned and region-crossing addresses work.
    @inlinable
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        if let r = try? hostRange(address, length: UInt64(MemoryLayout<T>.size)) {
            r.storeBytes(of: value.littleEndian, as: T.self)
            return
        }
        var v = value.littleEndian
        try withUnsafeBytes(of: &v) { (b) throws(GuestMemoryError) in try write(b, at: address) }
    }

    // MARK: Scatter-gather

    /// Resolves a list of guest buffers (a descriptor chain, an E1000 packet's data
    /// descriptors) into host views, appending to `segments` (reused by the caller to avoid
    /// allocating per frame). A buffer that crosses adjacent regions yields several views.
    /// Throws, leaving `segments` as it was, if any buffer is not RAM. A device that only
    /// reads (a TX chain) collects read-only views directly, with no second pass.
    @inlinable
    public func resolve<View: HostView>(_ buffers: some Sequence<GuestBuffer>, into segments: inout [View]) throws(GuestMemoryError) {
        let start = segments.count
        for b in buffers {
            do {
                try forEachChunk(b.address, length: UInt64(b.length)) { chunk, _ in segments.append(View(chunk)) }
            } catch {
                segments.removeSubrange(start...)
                throw error
            }
        }
    }
}

/// A host view of resolved guest memory: writable for buffers the device fills, read-only
/// for buffers it only sends.
public protocol HostView {
    init(_ chunk: UnsafeMutableRawBufferPointer)
}
extension UnsafeMutableRawBufferPointer: HostView {}
extension UnsafeRawBufferPointer: HostView {}
