import CChecksum
import VMMCore

/// The Internet checksum (RFC 1071): the 16-bit ones'-complement of the ones'-complement
/// sum of 16-bit big-endian words, used by IPv4 headers, TCP, UDP and ICMP.
///
/// An accumulator: add scattered buffers in frame order (odd-length pieces are handled by
/// swapping the next piece's sum, RFC 1071 §2(A) "byte order independence" / §2(B)),
/// then read `folded` (the sum) or `checksum` (its complement, the value stored in a
/// header). The hot loop sums 64 bytes at a time in host order and converts once at the
/// end (RFC 1071 §2(B), §4.2 "deferred carries"); it never allocates.
public struct InternetChecksum: Sendable, Equatable {
    /// Unfolded sum of big-endian 16-bit values; each addition is at most 0xFFFF, so it
    /// cannot wrap for any buffer that fits in memory.
    @usableFromInline var sum: UInt64
    /// An odd number of bytes has been added: the next byte is the low half of a word.
    @usableFromInline var oddLength: Bool

    public init() { sum = 0; oddLength = false }

    /// Starts from an existing partial sum (e.g. a pseudo-header sum left in a checksum
    /// field by a driver, or another accumulator's `folded`).
    public init(partial: UInt16) { sum = UInt64(partial); oddLength = false }

    /// Adds bytes that follow everything added so far.
    @inlinable
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var s = InternetChecksum.sum16(bytes)
        if oddLength { s = s.byteSwapped }
        sum &+= UInt64(s)
        if bytes.count & 1 == 1 { oddLength.toggle() }
    }

    /// Copies `source` to `destination` (as large, not overlapping) and adds it as
    /// `add(_:)` would, in one pass over the bytes and one call where the CPU has AVX2
    /// (`cchecksum_copy_sum16_wide`): a received frame goes into guest memory and has its
    /// checksum verified (e1000 RXCSUM) for about the price of the copy.
    @inlinable @inline(__always)
    public mutating func add(copying source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer) {
        guard let from = source.baseAddress, InternetChecksum.wideLoopAvailable else {
            if let from = source.baseAddress { ByteCopy.copy(to: destination, from: from, count: source.count) }
            add(source)
            return
        }
        var s = UInt16(bigEndian: InternetChecksum.fold(InternetChecksum.copyAndWideSum(destination, from, count: source.count)))
        if oddLength { s = s.byteSwapped }
        sum &+= UInt64(s)
        if source.count & 1 == 1 { oddLength.toggle() }
    }

    public mutating func add(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { add($0) }
    }

    /// Adds one 16-bit word given as its numeric (big-endian-on-the-wire) value. Must be
    /// called at an even byte position (pseudo-header fields, rewritten header fields).
    @inlinable
    public mutating func add(word: UInt16) { sum &+= UInt64(word) }

    /// Adds a 32-bit value as two words (addresses, sequence numbers, IPv6 lengths).
    @inlinable
    public mutating func add(word32: UInt32) {
        sum &+= UInt64(word32 >> 16) &+ UInt64(word32 & 0xFFFF)
    }

    /// Merges the sum of bytes that directly follow these (e.g. a payload summed
    /// separately); an odd length so far is handled as in `add(_:)`.
    @inlinable
    public mutating func add(_ other: InternetChecksum) {
        var s = other.folded
        if oddLength { s = s.byteSwapped }
        sum &+= UInt64(s)
        if other.oddLength { oddLength.toggle() }
    }

    /// The ones'-complement sum folded to 16 bits (end-around carries added back).
    @inlinable
    public var folded: UInt16 { InternetChecksum.fold(sum) }

    /// The value to store in a checksum field: the complement of the sum.
    @inlinable
    public var checksum: UInt16 { ~folded }

    // MARK: One-shot helpers

    /// The checksum of `bytes` (what belongs in the field when it was zero while summing).
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var c = InternetChecksum(); c.add(bytes); return c.checksum
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt16 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// Whether a region that contains its own checksum field is intact: its sum is 0xFFFF
    /// (RFC 1071 §1 "to check a checksum").
    @inlinable
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var c = InternetChecksum(); c.add(bytes); return c.folded == 0xFFFF
    }

    // MARK: Incremental update (RFC 1624)

    /// The checksum after one 16-bit field changes from `old` to `new`, without re-summing:
    /// HC' = ~(~HC + ~m + m') (RFC 1624 §3, eqn. 3, which avoids the -0 pitfall of eqn. 2).
    @inlinable
    public static func updated(_ checksum: UInt16, replacing old: UInt16, with new: UInt16) -> UInt16 {
        ~fold(UInt64(~checksum) &+ UInt64(~old) &+ UInt64(new))
    }

    /// Same for a 32-bit field (an IPv4 address, a TCP sequence number).
    @inlinable
    public static func updated(_ checksum: UInt16, replacing old: UInt32, with new: UInt32) -> UInt16 {
        let s = UInt64(~checksum) &+ UInt64(~UInt16(truncatingIfNeeded: old >> 16)) &+ UInt64(~UInt16(truncatingIfNeeded: old))
            &+ UInt64(new >> 16) &+ UInt64(new & 0xFFFF)
        return ~fold(s)
    }

    // MARK: Pseudo-headers

    /// The TCP/UDP pseudo-header over IPv4 (RFC 793 §3.1, RFC 768): source, destination,
    /// zero, protocol, transport length. Addresses as numeric values.
    @inlinable
    public static func pseudoHeaderIPv4(source: UInt32, destination: UInt32, protocol proto: UInt8, length: UInt16) -> InternetChecksum {
        var c = InternetChecksum()
        c.add(word32: source); c.add(word32: destination)
        c.add(word: UInt16(proto)); c.add(word: length)
        return c
    }

    /// The same, reading both addresses from an IPv4 header (offsets 12..<20).
    /// Nil when `ipHeader` is shorter than 20 bytes.
    @inlinable
    public static func pseudoHeaderIPv4(ipHeader: UnsafeRawBufferPointer, protocol proto: UInt8, length: UInt16) -> InternetChecksum? {
        guard let src = ipHeader.be32(at: 12), let dst = ipHeader.be32(at: 16) else { return nil }
        return pseudoHeaderIPv4(source: src, destination: dst, protocol: proto, length: length)
    }

    /// The upper-layer pseudo-header over IPv6 (RFC 8200 §8.1): both addresses, a 32-bit
    /// upper-layer length, three zero bytes and the next header. Reads the addresses from an
    /// IPv6 header (offsets 8..<40). Nil when `ipHeader` is shorter than 40 bytes.
    @inlinable
    public static func pseudoHeaderIPv6(ipHeader: UnsafeRawBufferPointer, nextHeader: UInt8, length: UInt32) -> InternetChecksum? {
        guard let addresses = ipHeader.slice(8, length: 32) else { return nil }
        var c = InternetChecksum()
        c.add(addresses)
        c.add(word32: length)
        c.add(word: UInt16(nextHeader))
        return c
    }

    // MARK: The loop

    /// Folds a 64-bit ones'-complement sum to 16 bits (2^16 ≡ 1 mod 0xFFFF, so carries
    /// are simply added back; RFC 1071 §4.2).
    @inlinable
    static func fold(_ value: UInt64) -> UInt16 {
        var s = (value & 0xFFFF_FFFF) &+ (value >> 32)
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// The folded sum of `bytes` as if they start at an even position, as a big-endian
    /// word value. Sums host-order 16-bit words (RFC 1071 §2(B)): where the CPU has AVX2,
    /// all of it in `CChecksum` (64-byte blocks in 256-bit vectors: 27 against 69 ns at
    /// 1480 B, 1.5 against 2.9 µs at 64 KiB on the Xeon here when it widened words by
    /// unpacking; with `VPMADDWD`, 0.58 against 0.70 µs at 64 KiB on an AMD EPYC; the tail
    /// there too, since Swift's tail loop cost 77 instructions for an IPv4 header), else
    /// as two `SIMD16<UInt16>` loads widened into 32-bit lanes (vector adds on any x86-64;
    /// 1.6× the 64-bit scalar loop at 1480 B and at 64 KiB, measured); the tail 8 bytes
    /// at a time into 32-bit halves of two 64-bit accumulators.
    @inlinable
    static func sum16(_ bytes: UnsafeRawBufferPointer, wide: Bool = wideLoopAvailable) -> UInt16 {
        guard var p = bytes.baseAddress else { return 0 }
        var n = bytes.count
        if wide { return UInt16(bigEndian: fold(wideSum(p, count: n))) }
        var total: UInt64 = 0
        while n >= 64 {
            // A lane gains at most 2 × 0xFFFF per round: 16,384 rounds stay below 2^32.
            var lanes = SIMD16<UInt32>()
            var rounds = min(n / 64, 16_384)
            n -= rounds * 64
            while rounds > 0 {
                let low = p.loadUnaligned(as: SIMD16<UInt16>.self)
                let high = p.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)
                lanes &+= SIMD16<UInt32>(truncatingIfNeeded: low) &+ SIMD16<UInt32>(truncatingIfNeeded: high)
                p += 64; rounds -= 1
            }
            total &+= SIMD16<UInt64>(truncatingIfNeeded: lanes).wrappedSum()
        }
        var a: UInt64 = 0, b: UInt64 = 0
        while n >= 8 {
            let w = p.loadUnaligned(as: UInt64.self)
            a &+= w & 0xFFFF_FFFF
            b &+= w >> 32
            p += 8; n -= 8
        }
        if n >= 4 { a &+= UInt64(p.loadUnaligned(as: UInt32.self)); p += 4; n -= 4 }
        if n >= 2 { a &+= UInt64(p.loadUnaligned(as: UInt16.self)); p += 2; n -= 2 }
        // A trailing byte is the high half of a big-endian word padded with zero
        // (RFC 1071 §4.1); in host order that is [byte, 0] loaded as a host word.
        if n == 1 { a &+= UInt64(UInt16(littleEndian: UInt16(p.load(as: UInt8.self)))) }
        return UInt16(bigEndian: fold(total &+ a &+ b))
    }

    /// Whether `wideSum` may run here: the CPU was asked once, when the program was
    /// loaded (a `static let` here cost a `swift_once` check on every checksum).
    @usableFromInline static var wideLoopAvailable: Bool { cchecksum_wide_ready() != 0 }

    /// `wideSum` while copying the bytes to `destination`.
    @usableFromInline
    static func copyAndWideSum(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, count: Int) -> UInt64 {
        cchecksum_copy_sum16_wide(destination, source, count)
    }

    /// The unfolded host-order sum of `count` bytes: 64-byte blocks 256 bits at a time,
    /// the tail in the same C function.
    @usableFromInline
    static func wideSum(_ p: UnsafeRawPointer, count: Int) -> UInt64 {
        cchecksum_sum16_wide(p, count)
    }
}
