/// Completes in software what a virtio-net header asks for (virtio 1.2 §5.1.6.2), for a
/// backend that cannot: partial checksums (NEEDS_CSUM) and TCP segmentation (GSO
/// TCPV4/TCPV6). virtio-net calls `isNeeded` per frame and, when it says yes, `complete`.
public enum SoftwareOffload {
    /// The buffer size `complete` needs for frames of up to 64 KiB plus a VLAN tag.
    public static let recommendedBufferSize = 65_536 + HeaderSize.vlanTag

    /// At most this many bytes are read to find the headers of a GSO frame (Ethernet,
    /// two VLAN tags, IPv6 with extension headers, TCP with options fit well within).
    public static let maxHeaderBytes = 512

    /// Whether a frame sent with `header` must go through `complete` before `backend`
    /// can take it: it asks for an offload the backend does not complete itself.
    public static func isNeeded(for header: VirtioNetHeader, backend: BackendCapabilities) -> Bool {
        let offloads = backend.virtioNetHeader ? backend.offloads : []
        if header.isGSO {
            let needed: NetOffloads
            switch header.gsoType & ~VirtioNetHeader.gsoECN {
            case VirtioNetHeader.GSOType.tcpv4.rawValue: needed = .tso4
            case VirtioNetHeader.GSOType.tcpv6.rawValue: needed = .tso6
            case VirtioNetHeader.GSOType.udp.rawValue: needed = .ufo
            default: return true // unknown: `complete` rejects it
            }
            let ecn: NetOffloads = header.gsoType & VirtioNetHeader.gsoECN != 0 ? .tsoECN : []
            return !offloads.isSuperset(of: needed.union(ecn).union(.checksum))
        }
        if header.flags & VirtioNetHeader.needsChecksum != 0 { return !offloads.contains(.checksum) }
        return false
    }

    /// Produces the frame(s) `header` describes with every offload done, each through
    /// `emit` (a view into `buffer`, valid only during the call): one frame with its
    /// checksum completed, or one frame per TCP segment. No frame exceeds `maxFrameSize`
    /// (segments are cut smaller when needed). `hdr_len` is not trusted (virtio 1.2
    /// §5.1.6.2.2: it is only exact with VIRTIO_NET_F_GUEST_HDRLEN); the headers are parsed.
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

    static func segment(_ frame: ScatteredFrame, header: VirtioNetHeader, maxFrameSize: Int,
                        buffer: UnsafeMutableRawBufferPointer,
                        emit: (UnsafeRawBufferPointer) -> Void) throws(FrameError) -> Int {
        let gsoType = header.gsoType & ~VirtioNetHeader.gsoECN
        let expected: ParsedFrame.Network
        switch gsoType {
        case VirtioNetHeader.GSOType.tcpv4.rawValue: expected = .ipv4
        case VirtioNetHeader.GSOType.tcpv6.rawValue: expected = .ipv6
        default: throw .unsupportedGSO(header.gsoType)
        }
        let probeLength = min(frame.length, maxHeaderBytes, buffer.count)
        let probe = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< probeLength])
        frame.copyBytes(from: 0, into: probe)
        guard let parsed = FrameParser.parse(UnsafeRawBufferPointer(probe), lengths: .headersOnly),
              parsed.network == expected, parsed.isTCP,
              let layout = SegmentationLayout(parsed, segmentSize: Int(header.gsoSize))
        else { throw .unsupportedGSO(header.gsoType) }
        guard maxFrameSize > layout.headerLength else { throw .tooLarge(length: layout.headerLength + 1, limit: maxFrameSize) }
        let room = min(buffer.count, maxFrameSize)
        return try TSOSegmenter.segment(frame, layout: layout, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< room]), emit: emit)
    }
}

/// A reusable buffer for `SoftwareOffload.complete` / `TSOSegmenter.segment`, allocated
/// once per device. Not thread-safe: the owner uses it under its device lock.
public final class FrameScratchBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    public init(capacity: Int = SoftwareOffload.recommendedBufferSize) {
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, HeaderSize.ethernet), alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}
