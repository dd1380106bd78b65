import Virtio
import VMMCore
import VMMBlock

/// One request taken apart: what to ask the backend, where the status byte goes, and
/// how many bytes the device will have written. Built from host views of the chain's
/// buffers, making no assumption about how the driver split header, data and status
/// across descriptors (virtio 1.2 §2.7.4 "Message Framing": the status is simply the
/// last writable byte, and the header may share a descriptor with data).
struct VirtioBlkParsedRequest {
    enum Operation {
        case backend(BlockRequest)
        /// GET_ID: the answer is written by the device itself, across these buffers.
        case identify([UnsafeMutableRawBufferPointer])
        /// Completes at once with this status (a bad request, or nothing to do).
        case immediate(VirtioBlkStatus)
    }
    var operation: Operation
    let status: UnsafeMutableRawPointer
    /// The used length on success: data bytes written plus the status byte.
    let writtenOnSuccess: UInt32
    /// Whether the request modifies the disk (needs a flush after it in write-through mode).
    var isWrite = false
}

/// Why a chain cannot even carry a status back: it is returned with length 0 (the driver
/// learns nothing, as with a lost request — only a buggy or hostile guest sends one).
enum VirtioBlkChainError: Error {
    case noStatusByte
    case notInRAM
}

/// The limits a request is checked against.
struct VirtioBlkLimits {
    var capacityBytes: UInt64
    var logicalBlockSize: UInt64
    var readOnly: Bool
    var canDiscard: Bool
    var canWriteZeroes: Bool
    var maxDiscardSectors: UInt32
    var maxWriteZeroesSectors: UInt32
}

struct VirtioBlkRequestParser {
    /// Reused between requests so parsing does not allocate per request.
    private var readable: [UnsafeMutableRawBufferPointer] = []
    private var writable: [UnsafeMutableRawBufferPointer] = []

    init() {
        readable.reserveCapacity(64)
        writable.reserveCapacity(64)
    }

    mutating func parse(_ chain: DescriptorChain, memory: GuestMemory, limits: VirtioBlkLimits) throws(VirtioBlkChainError) -> VirtioBlkParsedRequest {
        writable.removeAllKeepingStorage()
        readable.removeAllKeepingStorage()
        do { try memory.resolve(chain.writable, into: &writable) } catch { throw .notInRAM }
        // The status byte: the last byte of the last non-empty writable buffer.
        while let last = writable.last, last.count == 0 { writable.removeLast() }
        guard let last = writable.last, let lastBase = last.baseAddress else { throw .noStatusByte }
        let status = lastBase + (last.count - 1)
        writable[writable.count - 1] = UnsafeMutableRawBufferPointer(start: lastBase, count: last.count - 1)
        let writableData = UInt64(chain.writableLength) - 1

        func done(_ s: VirtioBlkStatus) -> VirtioBlkParsedRequest {
            VirtioBlkParsedRequest(operation: .immediate(s), status: status, writtenOnSuccess: 1)
        }
        do { try memory.resolve(chain.readable, into: &readable) } catch { return done(.ioError) }
        guard chain.readableLength >= UInt64(VirtioBlkRequestHeader.size) else { return done(.ioError) }
        var header = [UInt8](repeating: 0, count: VirtioBlkRequestHeader.size)
        let data = Self.split(&readable, taking: &header)
        let h = header.withUnsafeBytes { VirtioBlkRequestHeader($0) }
        let readableData = chain.readableLength - UInt64(VirtioBlkRequestHeader.size)

        guard let type = VirtioBlkRequestType(rawValue: h.type) else { return done(.unsupported) }
        switch type {
        case .read, .write:
            let length = type == .read ? writableData : readableData
            guard let offset = Self.checkedRange(sector: h.sector, length: length, limits: limits) else { return done(.ioError) }
            if type == .write && limits.readOnly { return done(.ioError) } // §5.2.6.2: and write no data
            if length == 0 { return done(.ok) }
            if type == .read {
                return VirtioBlkParsedRequest(operation: .backend(.read(offset: offset, into: writable)), status: status,
                                              writtenOnSuccess: UInt32(clamping: length + 1))
            }
            let sources = data.map { UnsafeRawBufferPointer($0) }
            return VirtioBlkParsedRequest(operation: .backend(.write(offset: offset, from: sources)), status: status,
                                          writtenOnSuccess: 1, isWrite: true)
        case .flush, .legacyFlushOut:
            return VirtioBlkParsedRequest(operation: .backend(.flush), status: status, writtenOnSuccess: 1)
        case .getID:
            // The driver supplies 20 bytes (§5.2.6.1), split across descriptors as it likes
            // (§2.7.4; QEMU copies the serial over them with iov_from_buf).
            guard writableData >= UInt64(virtioBlkIDBytes) else { return done(.ioError) }
            return VirtioBlkParsedRequest(operation: .identify(writable), status: status,
                                          writtenOnSuccess: UInt32(virtioBlkIDBytes + 1))
        case .discard, .writeZeroes:
            return rangeRequest(type, data: data, length: readableData, status: status, limits: limits)
        }
    }

    /// DISCARD and WRITE_ZEROES carry one 16-byte range (max_discard_seg and
    /// max_write_zeroes_seg are 1, as in QEMU; more is UNSUPP). §5.2.6.2: unknown flags
    /// and UNMAP on a DISCARD are UNSUPP; beyond the limits or the disk, IOERR.
    private func rangeRequest(_ type: VirtioBlkRequestType, data: [UnsafeMutableRawBufferPointer], length: UInt64,
                              status: UnsafeMutableRawPointer, limits: VirtioBlkLimits) -> VirtioBlkParsedRequest {
        func done(_ s: VirtioBlkStatus) -> VirtioBlkParsedRequest {
            VirtioBlkParsedRequest(operation: .immediate(s), status: status, writtenOnSuccess: 1)
        }
        let supported = type == .discard ? limits.canDiscard : limits.canWriteZeroes
        guard supported else { return done(.unsupported) }
        guard length == UInt64(VirtioBlkRange.size) else { return done(length % 16 == 0 && length > 0 ? .unsupported : .ioError) }
        var copy = data
        var bytes = [UInt8](repeating: 0, count: VirtioBlkRange.size)
        _ = Self.split(&copy, taking: &bytes)
        let range = VirtioBlkRange(bytes)
        guard range.flags & ~VirtioBlkRange.unmapFlag == 0 else { return done(.unsupported) }
        if type == .discard && range.flags & VirtioBlkRange.unmapFlag != 0 { return done(.unsupported) }
        let limit = type == .discard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors
        guard range.sectorCount <= limit else { return done(.ioError) }
        let length = UInt64(range.sectorCount) * virtioBlkSectorSize
        guard let offset = Self.checkedRange(sector: range.sector, length: length, limits: limits) else { return done(.ioError) }
        if limits.readOnly { return done(.ioError) }
        if length == 0 { return done(.ok) }
        let request: BlockRequest = type == .discard
            ? .discard(offset: offset, length: length)
            : .writeZeroes(offset: offset, length: length, mayUnmap: range.flags & VirtioBlkRange.unmapFlag != 0)
        return VirtioBlkParsedRequest(operation: .backend(request), status: status, writtenOnSuccess: 1, isWrite: true)
    }

    /// The most bytes one request moves: QEMU's BDRV_REQUEST_MAX_SECTORS (INT_MAX >> 9
    /// sectors), which its virtio_blk_sect_range_ok enforces. Descriptors may name the
    /// same guest buffer again and again, so without it one request of 254 descriptors
    /// could read or write the whole disk.
    static let maxRequestBytes = UInt64(Int32.max >> 9) << 9

    /// The byte offset of `sector`, when `length` bytes from there lie on the disk, are at
    /// most `maxRequestBytes`, and both are multiples of the logical block size (QEMU's
    /// virtio_blk_sect_range_ok).
    static func checkedRange(sector: UInt64, length: UInt64, limits: VirtioBlkLimits) -> UInt64? {
        guard length <= maxRequestBytes else { return nil }
        let (offset, o1) = sector.multipliedReportingOverflow(by: virtioBlkSectorSize)
        let (end, o2) = offset.addingReportingOverflow(length)
        guard !o1, !o2, end <= limits.capacityBytes else { return nil }
        guard offset % limits.logicalBlockSize == 0, length % limits.logicalBlockSize == 0 else { return nil }
        return offset
    }

    /// Copies the first `into.count` bytes of `segments` into `into` and returns the rest
    /// of the segments (the caller has checked there are enough bytes).
    static func split(_ segments: inout [UnsafeMutableRawBufferPointer], taking into: inout [UInt8]) -> [UnsafeMutableRawBufferPointer] {
        var needed = into.count
        var copied = 0
        var rest: [UnsafeMutableRawBufferPointer] = []
        for s in segments {
            if needed > 0 {
                let n = min(needed, s.count)
                into.withUnsafeMutableBytes { dst in
                    dst.baseAddress.map { d in s.baseAddress.map { ByteCopy.copy(to: d + copied, from: $0, count: n) } }
                }
                copied += n
                needed -= n
                if n < s.count, let base = s.baseAddress { rest.append(UnsafeMutableRawBufferPointer(start: base + n, count: s.count - n)) }
            } else if s.count > 0 {
                rest.append(s)
            }
        }
        return rest
    }
}
