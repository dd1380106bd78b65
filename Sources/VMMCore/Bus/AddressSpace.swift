import Logging
import Synchronization

/// Something that answers accesses in a mapped range; offsets are relative to the range start.
public protocol AccessHandler: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

public enum AddressSpaceError: Error, Equatable, CustomStringConvertible {
    case overlap(new: String, existing: String, range: Range<UInt64>)
    case empty(String)
    public var description: String {
        switch self {
        case let .overlap(n, e, r): "\(n) at 0x\(String(r.lowerBound, radix: 16))..<0x\(String(r.upperBound, radix: 16)) overlaps \(e)"
        case let .empty(n): "\(n): empty range"
        }
    }
}

/// Routes a port-I/O or MMIO access to whoever owns the address, by range lookup
/// (binary search over non-overlapping ranges). Overlapping mappings are rejected.
/// Unclaimed addresses read as all ones and ignore writes, logged once per address.
public final class AddressSpace: @unchecked Sendable {
    public struct Mapping: Sendable {
        public let id: UInt64
        public let range: Range<UInt64>
        public let owner: String
        public let handler: AccessHandler
    }

    public let kind: AddressSpaceKind
    private let state = Mutex<(mappings: [Mapping], nextID: UInt64)>(([], 1))
    private let unclaimed = Mutex<Set<UInt64>>([])
    private let logger: Logger

    public init(kind: AddressSpaceKind, logger: Logger = Logger(label: "swiftvmm.bus")) {
        self.kind = kind
        self.logger = logger
    }

    @discardableResult
    public func map(_ range: Range<UInt64>, owner: String, handler: AccessHandler) throws(AddressSpaceError) -> UInt64 {
        guard !range.isEmpty else { throw .empty(owner) }
        return try state.withLock { (s) throws(AddressSpaceError) -> UInt64 in
            if let clash = s.mappings.first(where: { $0.range.overlaps(range) }) {
                throw .overlap(new: owner, existing: clash.owner, range: range)
            }
            let id = s.nextID
            s.nextID += 1
            let i = s.mappings.firstIndex { $0.range.lowerBound > range.lowerBound } ?? s.mappings.count
            s.mappings.insert(Mapping(id: id, range: range, owner: owner, handler: handler), at: i)
            return id
        }
    }

    public func unmap(_ id: UInt64) {
        state.withLock { $0.mappings.removeAll { $0.id == id } }
    }

    public var mappings: [Mapping] { state.withLock { $0.mappings } }

    /// The mapping holding every byte of an access of `size` bytes at `address`.
    public func lookup(_ address: UInt64, size: Int) -> (handler: AccessHandler, offset: UInt64)? {
        guard size > 0 else { return nil }
        return state.withLock { s -> (AccessHandler, UInt64)? in
            var lo = 0, hi = s.mappings.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if s.mappings[mid].range.upperBound <= address { lo = mid + 1 } else { hi = mid }
            }
            guard lo < s.mappings.count else { return nil }
            let m = s.mappings[lo]
            guard m.range.contains(address) else { return nil }
            let off = address - m.range.lowerBound
            guard UInt64(size) <= UInt64(m.range.count) - off else { return nil }
            return (m.handler, off)
        }
    }

    /// A read of `size` bytes. Handlers only ever see sizes 1, 2, 4 and 8: a KVM MMIO exit
    /// can carry 3, 5, 6 or 7 bytes (an unaligned access split at a page boundary), and such
    /// an access is split into naturally aligned pieces, as a bus would. Sizes outside 1...8
    /// and accesses that would wrap past 2^64 are unclaimed.
    public func read(_ address: UInt64, size: Int) -> UInt64 {
        guard (1 ... 8).contains(size), !address.addingReportingOverflow(UInt64(size - 1)).overflow else {
            noteUnclaimed(address, size: size, write: false)
            return Self.allOnes(size)
        }
        if size.nonzeroBitCount != 1 {
            var value: UInt64 = 0
            forEachPiece(address, size: size) { piece, shift, width in value |= read(piece, size: width) << shift }
            return value
        }
        if let (h, off) = lookup(address, size: size) { return h.read(offset: off, size: size) }
        noteUnclaimed(address, size: size, write: false)
        return Self.allOnes(size)
    }

    /// A write of `size` bytes; split and refused like `read`.
    public func write(_ address: UInt64, size: Int, value: UInt64) {
        guard (1 ... 8).contains(size), !address.addingReportingOverflow(UInt64(size - 1)).overflow else {
            noteUnclaimed(address, size: size, write: true)
            return
        }
        if size.nonzeroBitCount != 1 {
            forEachPiece(address, size: size) { piece, shift, width in write(piece, size: width, value: (value >> shift) & Self.allOnes(width)) }
            return
        }
        if let (h, off) = lookup(address, size: size) { return h.write(offset: off, size: size, value: value) }
        noteUnclaimed(address, size: size, write: true)
    }

    static func allOnes(_ size: Int) -> UInt64 { (1 ... 7).contains(size) ? (UInt64(1) << (UInt64(size) * 8)) - 1 : .max }

    /// Naturally aligned power-of-two pieces covering `[address, address+size)` (size 1...8, not wrapping).
    private func forEachPiece(_ address: UInt64, size: Int, _ body: (_ address: UInt64, _ shift: UInt64, _ width: Int) -> Void) {
        var done = 0
        while done < size {
            let at = address &+ UInt64(done) // cannot wrap: checked by the caller
            var width = 4
            while width > 1 && (at % UInt64(width) != 0 || width > size - done) { width /= 2 }
            body(at, UInt64(done) * 8, width)
            done += width
        }
    }

    private func noteUnclaimed(_ address: UInt64, size: Int, write: Bool) {
        let first = unclaimed.withLock { set -> Bool in
            guard set.count < 4096 else { return false }
            return set.insert(address).inserted
        }
        if first {
            logger.debug("unclaimed \(kind == .io ? "port" : "MMIO") \(write ? "write" : "read") of \(size) bytes at 0x\(String(address, radix: 16))")
        }
    }
}
