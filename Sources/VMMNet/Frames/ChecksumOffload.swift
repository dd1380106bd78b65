import VMMCore
/// Checksum offloads a NIC performs for the guest: completing a partial checksum on
/// transmit, and verifying checksums on receive.
public enum ChecksumOffload {
    // MARK: Transmit

    /// virtio 1.2 §5.1.6.2 VIRTIO_NET_HDR_F_NEEDS_CSUM: the ones'-complement checksum of
    /// everything from `start` to the end of `frame` is stored at `start + offset`. The
    /// field already holds the pseudo-header sum the driver put there, and is summed as is.
    public static func complete(_ frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) throws(FrameError) {
        let (field, overflow) = start.addingReportingOverflow(offset)
        guard !overflow else { throw .checksumRange(start: start, field: offset, end: frame.count, length: frame.count) }
        try insert(frame, start: start, end: frame.count, field: field)
    }

    /// Intel 8254x SDM §3.3.6 (TCP/IP context descriptor): sum from `start` (TUCSS / IPCSS)
    /// up to `end` (exclusive; TUCSE / IPCSE + 1, or the frame's end when the descriptor
    /// says 0) and store the checksum at the absolute offset `field` (TUCSO / IPCSO).
    /// A computed 0 is sent as 0xFFFF (the same value in ones'-complement; RFC 768 requires
    /// it for UDP, where 0 means "no checksum"), as Linux's skb_checksum_help does.
    public static func insert(_ frame: UnsafeMutableRawBufferPointer, start: Int, end: Int, field: Int) throws(FrameError) {
        guard start >= 0, start <= end, end <= frame.count,
              field >= 0, field <= frame.count - 2
        else { throw .checksumRange(start: start, field: field, end: end, length: frame.count) }
        var sum = InternetChecksum()
        sum.add(UnsafeRawBufferPointer(rebasing: frame[start ..< end]))
        let value = sum.checksum
        frame.storeBE16(value == 0 ? 0xFFFF : value, at: field)
    }

    /// E1000 IXSM without a trusted context: recomputes the IPv4 header checksum of the
    /// header at `ipOffset` (RFC 791 §3.1: over IHL × 4 bytes with the field taken as 0).
    public static func insertIPv4HeaderChecksum(_ frame: UnsafeMutableRawBufferPointer, ipOffset: Int) throws(FrameError) {
        let header = try ipv4Header(frame, at: ipOffset)
        header.storeBE16(0, at: 10)
        header.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(header)), at: 10)
    }

    /// The IPv4 header at `offset`, its IHL checked against the buffer.
    static func ipv4Header(_ frame: UnsafeMutableRawBufferPointer, at offset: Int) throws(FrameError) -> UnsafeMutableRawBufferPointer {
        guard offset >= 0, offset < frame.count else {
            // `offset` comes from a guest's context descriptor: saturate, never overflow (fuzz finding F2).
            let (needed, overflow) = max(offset, 0).addingReportingOverflow(HeaderSize.ipv4Minimum)
            throw .truncated(needed: overflow ? .max : needed, length: frame.count)
        }
        let versionIHL = frame[offset]
        guard versionIHL >> 4 == 4 else { throw .badHeader("IP version \(versionIHL >> 4) where IPv4 was expected") }
        let length = Int(versionIHL & 0x0F) * 4
        guard length >= HeaderSize.ipv4Minimum else { throw .badHeader("IPv4 IHL \(length / 4) < 5") }
        guard let header = frame.slice(offset, length: length) else { throw .truncated(needed: offset + length, length: frame.count) }
        return header
    }

    // MARK: Receive

    /// What checking a received frame found, per layer.
    public struct Verdicts: Sendable, Equatable {
        public enum Verdict: Sendable, Equatable {
            /// Not checked: no such header, a fragment, a protocol without a checksum, an
            /// IPv6 routing header (whose final destination is not parsed), or a UDP/IPv4
            /// datagram sent without a checksum (0, RFC 768).
            case notChecked
            case good
            case bad
        }

        /// The IPv4 header checksum (E1000 RXCSUM.IPOFLD → status IPCS, error IPE).
        public var ipv4Header: Verdict = .notChecked
        /// The TCP or UDP checksum (E1000 RXCSUM.TUOFLD → status TCPCS, error TCPE).
        public var transport: Verdict = .notChecked
        /// Whether `transport` concerns UDP (82544+ report UDPCS separately).
        public var transportIsUDP = false
        /// Where the TCP/UDP segment lies in the frame and the sum of its bytes alone,
        /// when `transport` was checked: a device that also sums the whole packet (the
        /// e1000's packet checksum) adds it instead of reading the payload a second time.
        public var transportSegment: SummedRange?

        public struct SummedRange: Sendable, Equatable {
            public var range: Range<Int>
            public var sum: InternetChecksum
        }

        public init() {}

        /// virtio 1.2 §5.1.6.4 VIRTIO_NET_HDR_F_DATA_VALID: the transport checksum was
        /// checked and is good, so the driver may skip it.
        public var dataValid: Bool { transport == .good }
    }

    /// Verifies the IPv4 header and TCP/UDP checksums of a complete received frame.
    public static func verify(_ frame: UnsafeRawBufferPointer) -> Verdicts {
        guard let parsed = FrameParser.parse(frame) else { return Verdicts() }
        return verify(frame, parsed: parsed)
    }

    public static func verify(_ frame: [UInt8]) -> Verdicts {
        frame.withUnsafeBytes { verify($0) }
    }

    /// `verify(_:)` that copies the frame to `destination` (as large, not overlapping)
    /// when it sums a TCP/UDP segment, summing the segment as it copies it
    /// (`InternetChecksum.add(copying:to:)`): a receive path that copies the frame into
    /// guest memory then reads it once. The frame was copied exactly when the result has
    /// a `transportSegment`; otherwise nothing was written and the copy is the caller's.
    public static func verify(_ frame: UnsafeRawBufferPointer, copyingTo destination: UnsafeMutableRawPointer) -> Verdicts {
        guard let parsed = FrameParser.parse(frame) else { return Verdicts() }
        return verify(frame, parsed: parsed, copyingTo: destination)
    }

    /// The same with the frame already parsed (with `.checked` lengths).
    public static func verify(_ frame: UnsafeRawBufferPointer, parsed: ParsedFrame) -> Verdicts {
        verify(frame, parsed: parsed, copyingTo: nil)
    }

    /// With a `destination`, the segment's bytes are copied as they are summed and the
    /// rest of the frame around them (exactly when the result has a `transportSegment`);
    /// on the paths that sum nothing the caller copies.
    @inline(__always)
    private static func verify(_ frame: UnsafeRawBufferPointer, parsed: ParsedFrame,
                               copyingTo destination: UnsafeMutableRawPointer?) -> Verdicts {
        var verdicts = Verdicts()
        guard let network = parsed.network,
              let ipHeader = frame.slice(parsed.networkOffset, length: parsed.networkHeaderLength)
        else { return verdicts }
        if network == .ipv4 {
            verdicts.ipv4Header = InternetChecksum.isValid(ipHeader) ? .good : .bad
        }
        guard !parsed.isFragment, !parsed.hasIPv6RoutingHeader, parsed.isTCP || parsed.isUDP,
              let l4 = parsed.transportOffset, parsed.networkEnd >= l4,
              var segment = frame.slice(l4, length: parsed.networkEnd - l4)
        else { return verdicts }
        verdicts.transportIsUDP = parsed.isUDP
        if parsed.isUDP, network == .ipv4, segment.be16(at: 6) == 0 { return verdicts }
        if parsed.isUDP {
            // RFC 768: the UDP length bounds the datagram and its checksum, and what follows
            // it in the IP payload is not part of either (Linux's udp4_lib_rcv trims to it
            // and checks over that; QEMU's net_rx_pkt sums `uh_ulen` bytes). A length below
            // the header or past the payload is a malformed datagram, which Linux drops.
            guard let udpLength = segment.be16(at: 4).map(Int.init), udpLength >= 8, udpLength <= segment.count else {
                verdicts.transport = .bad
                return verdicts
            }
            segment = UnsafeRawBufferPointer(rebasing: segment[0 ..< udpLength])
        }
        let pseudo: InternetChecksum?
        switch network {
        case .ipv4:
            pseudo = segment.count <= Int(UInt16.max)
                ? InternetChecksum.pseudoHeaderIPv4(ipHeader: ipHeader, protocol: parsed.transportProtocol, length: UInt16(segment.count))
                : nil
        case .ipv6:
            pseudo = InternetChecksum.pseudoHeaderIPv6(ipHeader: ipHeader, nextHeader: parsed.transportProtocol, length: UInt32(segment.count))
        }
        guard var sum = pseudo else { return verdicts }
        var segmentSum = InternetChecksum()
        if let destination, let source = frame.baseAddress {
            let end = l4 + segment.count
            ByteCopy.copy(to: destination, from: source, count: l4)
            segmentSum.add(copying: segment, to: destination + l4)
            ByteCopy.copy(to: destination + end, from: source + end, count: frame.count - end)
        } else {
            segmentSum.add(segment)
        }
        sum.add(segmentSum)
        verdicts.transportSegment = .init(range: l4 ..< l4 + segment.count, sum: segmentSum)
        // RFC 8200 §8.1: a zero UDP checksum over IPv6 is invalid (and sums to 0xFFFF too).
        let zeroUDPv6 = parsed.isUDP && network == .ipv6 && segment.be16(at: 6) == 0
        verdicts.transport = sum.folded == 0xFFFF && !zeroUDPv6 ? .good : .bad
        return verdicts
    }
}
