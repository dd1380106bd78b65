/// Completes in software what a virtio-net header asks for (virtio 1.2 §5.1.6.2), for a
/// backend that cannot: partial checksums (NEEDS_CSUM), TCP segmentation (GSO
/// TCPV4/TCPV6), UDP fragmentation over IPv4 (GSO UDP) and UDP segmentation (GSO
/// UDP_L4). virtio-net calls `isNeeded` per frame and, when it says yes, `complete`.
public enum SoftwareOffload {
    /// The buffer size `complete` needs for frames of up to 64 KiB plus a VLAN tag.
    public static let recommendedBufferSize = 65_536 + HeaderSize.vlanTag

    /// At most this many bytes are read to find the headers of a GSO frame (Ethernet,
    /// two VLAN tags, IPv6 with extension headers, TCP with options fit well within).
    public static let maxHeaderBytes = 512

    /// Whether a frame sent with `header` must go through `complete` before `backend`
    /// can take it: it asks for an offload the backend does not complete itself. Asked
    /// per frame, hence inlinable.
    @inlinable
    public static func isNeeded(for header: VirtioNetHeader, backend: BackendCapabilities) -> Bool {
        let offloads = backend.virtioNetHeader ? backend.offloads : []
        if header.isGSO {
            let needed: NetOffloads
            switch header.gsoType & ~VirtioNetHeader.gsoECN {
            case VirtioNetHeader.GSOType.tcpv4.rawValue: needed = .tso4
            case VirtioNetHeader.GSOType.tcpv6.rawValue: needed = .tso6
            case VirtioNetHeader.GSOType.udp.rawValue: needed = .ufo
            default: return true // UDP_L4 (no backend offload names it) or unknown: `complete` decides
            }
            let ecn: NetOffloads = header.gsoType & VirtioNetHeader.gsoECN != 0 ? .tsoECN : []
            return !offloads.isSuperset(of: needed.union(ecn).union(.checksum))
        }
        if header.flags & VirtioNetHeader.needsChecksum != 0 { return !offloads.contains(.checksum) }
        return false
    }

    /// Produces the frame(s) `header` describes with every offload done, each through
    /// `emit` (a view into `buffer`, valid only during the call): one frame with its
    /// checksum completed, or one frame per segment or fragment. No frame exceeds
    /// `maxFrameSize` (segments are cut smaller when needed). `hdr_len` is not trusted
    /// (virtio 1.2 §5.1.6.2: it is only exact with VIRTIO_NET_F_GUEST_HDRLEN); the
    /// headers are parsed instead.
    /// Returns how many frames were emitted.
    @discardableResult
    public static func complete(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader, maxFrameSize: Int,
                                buffer: UnsafeMutableRawBufferPointer,
                                emit: (UnsafeRawBufferPointer) -> Void) throws(FrameError) -> Int {
        guard let frame = ScatteredFrame(segments) else { throw .tooLarge(length: Int.max, limit: maxFrameSize) }
        guard frame.length >= HeaderSize.ethernet else { throw .truncated(needed: HeaderSize.ethernet, length: frame.length) }
        if header.isGSO {
            return try segment(frame, header: header, maxFrameSize: maxFrameSize, buffer: buffer, emit: emit)
        }
        let limit = min(maxFrameSize, buffer.count)
        guard frame.length <= limit else { throw .tooLarge(length: frame.length, limit: limit) }
        let out = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< frame.length])
        frame.copyBytes(from: 0, into: out)
        if header.flags & VirtioNetHeader.needsChecksum != 0 {
            try ChecksumOffload.complete(out, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
        }
        emit(UnsafeRawBufferPointer(out))
        return 1
    }

    /// VIRTIO_NET_HDR_GSO_UDP_L4 (virtio 1.2 §5.1.6.2, "USO"): UDP segmentation, each
    /// segment a datagram with its own header (not in `VirtioNetHeader.GSOType`).
    public static let gsoUDPL4: UInt8 = 5

    static func segment(_ frame: ScatteredFrame, header: VirtioNetHeader, maxFrameSize: Int,
                        buffer: UnsafeMutableRawBufferPointer,
                        emit: (UnsafeRawBufferPointer) -> Void) throws(FrameError) -> Int {
        let gsoType = header.gsoType & ~VirtioNetHeader.gsoECN
        let network: ParsedFrame.Network?, transport: SegmentationLayout.Transport
        switch gsoType {
        case VirtioNetHeader.GSOType.tcpv4.rawValue: network = .ipv4; transport = .tcp
        case VirtioNetHeader.GSOType.tcpv6.rawValue: network = .ipv6; transport = .tcp
        case VirtioNetHeader.GSOType.udp.rawValue: network = .ipv4; transport = .udp
        case gsoUDPL4: network = nil; transport = .udp
        default: throw .unsupportedGSO(header.gsoType)
        }
        let room = min(buffer.count, maxFrameSize)
        guard room > 0 else { throw .tooLarge(length: frame.length, limit: room) }
        let output = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< room])
        // Find the headers in a private copy of the first bytes.
        let probe = UnsafeMutableRawBufferPointer(rebasing: output[0 ..< min(frame.length, maxHeaderBytes, room)])
        frame.copyBytes(from: 0, into: probe)
        guard let parsed = FrameParser.parse(UnsafeRawBufferPointer(probe), lengths: .headersOnly),
              network == nil || parsed.network == network,
              transport == .tcp ? parsed.isTCP : parsed.isUDP,
              let layout = SegmentationLayout(parsed, segmentSize: Int(header.gsoSize))
        else { throw .unsupportedGSO(header.gsoType) }
        guard room > layout.headerLength else { throw .tooLarge(length: layout.headerLength + 1, limit: room) }
        // With a routing header the pseudo-header's destination is the final one, inside
        // that header (RFC 8200 §8.1), not the IPv6 destination the segments' checksums
        // would be computed from: refused rather than sent with wrong sums.
        guard !parsed.hasIPv6RoutingHeader else { throw .badHeader("a GSO frame with an IPv6 routing header") }
        if gsoType == VirtioNetHeader.GSOType.udp.rawValue {
            return try UDPFragmenter.fragment(frame, networkOffset: layout.networkOffset, fragmentSize: Int(header.gsoSize),
                                              completeChecksum: header.flags & VirtioNetHeader.needsChecksum != 0,
                                              into: output, emit: emit)
        }
        return try TSOSegmenter.segment(frame, layout: layout, into: output, emit: emit)
    }
}
