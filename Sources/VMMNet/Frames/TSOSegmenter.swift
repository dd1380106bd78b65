/// TCP segmentation offload (and the 8254x's UDP variant): cuts one large frame into
/// frames of at most `headerLength + segmentSize` bytes, each with the headers copied
/// and fixed up as Linux's tcp_gso_segment / the 8254x (SDM §3.5 "TCP Segmentation") do:
///
/// - IPv4: total length per segment, identification incremented per segment, header
///   checksum recomputed (RFC 791). IPv6: payload length per segment (RFC 8200).
/// - TCP: sequence number advanced by the payload sent so far; FIN and PSH only on the
///   last segment; CWR only on the first (RFC 3168 §6.1.2: CWR goes out once).
/// - UDP: length per segment.
/// - The transport checksum computed from scratch over a fresh pseudo-header, so it does
///   not matter what a driver left in the field (Linux's e1000 leaves a length-less
///   pseudo-header sum, virtio-net GSO one with the full length).
///
/// Each segment is built in the caller's buffer and handed to `emit` before the next one
/// overwrites it: no allocation per segment. The header is copied out of the (guest)
/// frame once and validated in that private copy, so the guest cannot change it under us.
public enum TSOSegmenter {
    /// Room for one segment with headers of `headerLength` and a `segmentSize` payload,
    /// plus a VLAN tag.
    public static func bufferSize(headerLength: Int, segmentSize: Int) -> Int {
        headerLength + segmentSize + HeaderSize.vlanTag
    }

    /// Segments `frame` per `layout` into `output`, calling `emit` once per segment with a
    /// view valid only during the call. With `vlanTag`, each segment carries an 802.1Q tag
    /// (E1000 VLE) inserted after the MAC addresses. A payload larger than what `output`
    /// (or IP's 64 KiB) can hold per segment is cut smaller. Returns the segment count.
    @discardableResult
    public static func segment(_ frame: ScatteredFrame, layout: SegmentationLayout, vlanTag: UInt16? = nil,
                               into output: UnsafeMutableRawBufferPointer,
                               emit: (UnsafeRawBufferPointer) -> Void) throws(FrameError) -> Int {
        let shift = vlanTag == nil ? 0 : HeaderSize.vlanTag
        let plan = try Plan(layout, frameLength: frame.length, shift: shift, capacity: output.count)

        // The header, once: MAC addresses, the optional tag, the rest.
        guard frame.copyBytes(from: 0, into: UnsafeMutableRawBufferPointer(rebasing: output[0 ..< 12])),
              frame.copyBytes(from: 12, into: UnsafeMutableRawBufferPointer(rebasing: output[12 + shift ..< plan.headerEnd]))
        else { throw .truncated(needed: layout.headerLength, length: frame.length) }
        if let tag = vlanTag {
            output.storeBE16(EtherType.vlan, at: 12)
            output.storeBE16(tag, at: 14)
        }
        let fixer = try HeaderFixer(output, plan: plan, layout: layout)

        var reader = ScatteredFrame.Reader(frame, at: layout.headerLength)
        var sent = 0
        var count = 0
        repeat {
            let payload = min(plan.segmentSize, plan.payloadLength - sent)
            let end = plan.headerEnd + payload
            guard reader.read(into: UnsafeMutableRawBufferPointer(rebasing: output[plan.headerEnd ..< end])) else {
                throw .truncated(needed: frame.length, length: frame.length)
            }
            let segment = UnsafeMutableRawBufferPointer(rebasing: output[0 ..< end])
            fixer.fix(segment, index: count, payloadOffset: sent, isLast: sent + payload == plan.payloadLength)
            emit(UnsafeRawBufferPointer(segment))
            sent += payload
            count += 1
        } while sent < plan.payloadLength
        return count
    }

    /// The layout checked against the frame and the buffer, in output-buffer offsets.
    struct Plan {
        let networkOffset: Int, transportOffset: Int, headerEnd: Int
        let payloadLength: Int, segmentSize: Int

        init(_ layout: SegmentationLayout, frameLength: Int, shift: Int, capacity: Int) throws(FrameError) {
            let minimumIP = layout.network == .ipv4 ? HeaderSize.ipv4Minimum : HeaderSize.ipv6
            let minimumL4 = layout.transport == .tcp ? HeaderSize.tcpMinimum : HeaderSize.udp
            // Compare differences, never sums of guest values (no overflow on absurd input).
            guard layout.networkOffset >= HeaderSize.ethernet,
                  layout.transportOffset >= layout.networkOffset,
                  layout.transportOffset - layout.networkOffset >= minimumIP,
                  layout.headerLength >= layout.transportOffset,
                  layout.headerLength - layout.transportOffset >= minimumL4
            else { throw .badHeader("segmentation offsets IP \(layout.networkOffset) L4 \(layout.transportOffset) header \(layout.headerLength)") }
            guard layout.headerLength <= frameLength else { throw .headerLength(layout.headerLength, frameLength: frameLength) }
            guard layout.segmentSize >= SegmentationLimits.minimumSegmentSize else { throw .segmentSize(layout.segmentSize) }
            guard capacity > shift, layout.headerLength < capacity - shift else {
                throw .tooLarge(length: layout.headerLength + shift + 1, limit: capacity)
            }
            networkOffset = layout.networkOffset + shift
            transportOffset = layout.transportOffset + shift
            headerEnd = layout.headerLength + shift
            payloadLength = frameLength - layout.headerLength
            // IPv4 total length and IPv6 payload length are 16 bits: a segment's IP packet
            // stays within 65535 bytes whatever MSS the guest asked for.
            let ipOverhead = layout.network == .ipv4 ? layout.headerLength - layout.networkOffset
                                                     : layout.headerLength - layout.networkOffset - HeaderSize.ipv6
            let ipRoom = Int(UInt16.max) - ipOverhead
            guard ipRoom > 0 else { throw .tooLarge(length: layout.headerLength, limit: Int(UInt16.max)) }
            segmentSize = min(layout.segmentSize, capacity - headerEnd, ipRoom)
        }
    }

    /// Rewrites the per-segment fields of the header in `output` from the values the
    /// first copy of it held.
    struct HeaderFixer {
        let plan: Plan
        let network: ParsedFrame.Network
        let transport: SegmentationLayout.Transport
        let ipv4HeaderLength: Int
        let firstID: UInt16
        let firstSequence: UInt32
        let tcpFlags: UInt8

        init(_ output: UnsafeMutableRawBufferPointer, plan: Plan, layout: SegmentationLayout) throws(FrameError) {
            self.plan = plan
            network = layout.network
            transport = layout.transport
            let ip = UnsafeRawBufferPointer(rebasing: output[plan.networkOffset ..< plan.transportOffset])
            switch layout.network {
            case .ipv4:
                guard let versionIHL = ip.byte(at: 0), versionIHL >> 4 == 4 else { throw .badHeader("not an IPv4 header at \(layout.networkOffset)") }
                ipv4HeaderLength = Int(versionIHL & 0x0F) * 4
                guard ipv4HeaderLength >= HeaderSize.ipv4Minimum, ipv4HeaderLength <= ip.count else {
                    throw .badHeader("IPv4 IHL \(versionIHL & 0x0F) does not fit before the transport header")
                }
            case .ipv6:
                guard let version = ip.byte(at: 0), version >> 4 == 6 else { throw .badHeader("not an IPv6 header at \(layout.networkOffset)") }
                ipv4HeaderLength = 0
            }
            firstID = ip.be16(at: 4) ?? 0
            let l4 = UnsafeRawBufferPointer(rebasing: output[plan.transportOffset ..< plan.headerEnd])
            firstSequence = l4.be32(at: 4) ?? 0
            tcpFlags = l4.byte(at: 13) ?? 0
        }

        // TCP flags (RFC 9293 §3.1, RFC 3168 §23.2).
        static let fin: UInt8 = 0x01, psh: UInt8 = 0x08, cwr: UInt8 = 0x80

        /// `segment` is the whole output frame of this segment (headers + payload).
        func fix(_ segment: UnsafeMutableRawBufferPointer, index: Int, payloadOffset: Int, isLast: Bool) {
            let l4Length = segment.count - plan.transportOffset
            let ip = UnsafeMutableRawBufferPointer(rebasing: segment[plan.networkOffset ..< plan.transportOffset])
            let l4 = UnsafeMutableRawBufferPointer(rebasing: segment[plan.transportOffset...])
            let proto: UInt8
            switch transport {
            case .tcp:
                proto = IPProtocol.tcp
                l4.storeBE32(firstSequence &+ UInt32(truncatingIfNeeded: payloadOffset), at: 4)
                var flags = tcpFlags
                if !isLast { flags &= ~(HeaderFixer.fin | HeaderFixer.psh) }
                if index > 0 { flags &= ~HeaderFixer.cwr }
                l4.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
                l4.storeBE16(0, at: 16)
            case .udp:
                proto = IPProtocol.udp
                l4.storeBE16(UInt16(truncatingIfNeeded: l4Length), at: 4)
                l4.storeBE16(0, at: 6)
            }
            var sum: InternetChecksum
            switch network {
            case .ipv4:
                ip.storeBE16(UInt16(truncatingIfNeeded: segment.count - plan.networkOffset), at: 2)
                ip.storeBE16(firstID &+ UInt16(truncatingIfNeeded: index), at: 4)
                ip.storeBE16(0, at: 10)
                let header = UnsafeRawBufferPointer(rebasing: ip[0 ..< ipv4HeaderLength])
                ip.storeBE16(InternetChecksum.checksum(header), at: 10)
                sum = InternetChecksum.pseudoHeaderIPv4(ipHeader: header, protocol: proto, length: UInt16(truncatingIfNeeded: l4Length))
                    ?? InternetChecksum()
            case .ipv6:
                ip.storeBE16(UInt16(truncatingIfNeeded: segment.count - plan.networkOffset - HeaderSize.ipv6), at: 4)
                sum = InternetChecksum.pseudoHeaderIPv6(ipHeader: UnsafeRawBufferPointer(ip), nextHeader: proto, length: UInt32(truncatingIfNeeded: l4Length))
                    ?? InternetChecksum()
            }
            sum.add(UnsafeRawBufferPointer(l4))
            var checksum = sum.checksum
            if transport == .udp, checksum == 0 { checksum = 0xFFFF } // RFC 768: 0 means none
            l4.storeBE16(checksum, at: transport == .tcp ? 16 : 6)
        }
    }
}
