import VMMCore
import VMMNet

/// When the backend completes offloads itself (TAP with a virtio-net header), a TSO
/// packet or a checksum request goes to it whole with a `VirtioNetHeader` instead of
/// being segmented or summed here: one 64 KiB write instead of 45 segments.
///
/// The header describes the packet the way Linux's own CHECKSUM_PARTIAL / GSO packets
/// look (virtio 1.2 §5.1.6.2): IP lengths of the whole packet, the IPv4 header checksum
/// valid, and the TCP checksum field holding the pseudo-header sum over the full length.
/// Linux's e1000 driver leaves those for the hardware (length 0, a length-less pseudo
/// sum), so they are fixed up here. Anything that does not parse exactly as the context
/// descriptor claims takes the software path, which checks everything.
extension E1000Device {
    /// Sends the packet with a header and returns true, or returns false (having changed
    /// nothing that matters) when the software path must do it. Only the copied head is
    /// rewritten (TransmitAssembly.swift); the rest goes from guest memory.
    func sendWithBackendOffload(kind: Transmit.Kind, high: UInt64, tag: UInt16?) -> Bool {
        let caps = backend.capabilities
        // Looped-back frames never reach the backend: they need finished checksums.
        guard !loopbackActive, caps.virtioNetHeader, caps.offloads.contains(.checksum) else { return false }
        let length = transmit.length
        // Checked before any header is rewritten, since the software path starts from
        // the packet as the guest wrote it: a packet larger than the backend takes, or
        // a short one TCTL.PSP pads (§13.4.33; the backend would send it unpadded: a
        // 54-byte TCP ACK with TXSM went out as 54 bytes on the wire).
        guard length + (tag == nil ? 0 : HeaderSize.vlanTag) <= caps.maxFrameSize,
              length >= Transmit.minimumFrameLength || reg(Reg.tctl) & Tctl.padShortPackets == 0 else { return false }
        let c = transmit.context
        // TSO and IXSM rewrite headers: on the device's own copy of them. A checksum the
        // backend finishes needs nothing from the packet's bytes.
        if transmit.segmentation || transmit.options & Transmit.insertIPChecksum != 0 {
            guard copyHead() else { return false }
        }
        let head = UnsafeMutableRawBufferPointer(rebasing: transmitBuffer.bytes[0 ..< transmit.copied])
        let header: VirtioNetHeader
        var segments = 1
        if kind == .data, transmit.segmentation {
            guard c.loaded, c.isTCP, c.segmentSize >= SegmentationLimits.minimumSegmentSize, caps.offloads.contains(c.isIPv4 ? .tso4 : .tso6),
                  let h = segmentationHeader(head, length: length, context: c) else { return false }
            header = h
            let payload = length - c.headerLength
            segments = max(1, (payload + c.segmentSize - 1) / c.segmentSize)
        } else if let h = checksumHeader(head, length: length, kind: kind, high: high) {
            header = h
        } else {
            return false
        }
        if sendPacket(tag: tag, header: header, segments: segments), header.isGSO {
            statistics.count(E1000Statistics.tsctc)
        }
        return true
    }

    /// TSE: the context must match the parsed headers exactly; then lengths, the IPv4
    /// header checksum and the TCP pseudo-header seed are set for the whole packet.
    /// `head` is the packet's first bytes, `length` its whole length; the headers must lie in the head.
    private func segmentationHeader(_ head: UnsafeMutableRawBufferPointer, length: Int, context c: TransmitContext) -> VirtioNetHeader? {
        let probe = min(head.count, SoftwareOffload.maxHeaderBytes)
        guard let parsed = FrameParser.parse(UnsafeRawBufferPointer(rebasing: head[0 ..< probe]), lengths: .headersOnly),
              parsed.network == (c.isIPv4 ? .ipv4 : .ipv6), parsed.isTCP, parsed.vlanTCI == nil,
              parsed.networkOffset == c.ipStart, parsed.transportOffset == c.transportStart,
              parsed.headerLength == c.headerLength, c.headerLength < length, c.headerLength <= head.count
        else { return nil }
        let ipLength = length - c.ipStart
        let l4Length = length - c.transportStart
        guard ipLength <= Int(UInt16.max), c.transportStart - c.ipStart <= ipLength else { return nil }
        let ip = UnsafeMutableRawBufferPointer(rebasing: head[c.ipStart ..< c.transportStart])
        let seed: InternetChecksum?
        if c.isIPv4 {
            Self.storeBE16(UInt16(ipLength), in: ip, at: 2)
            guard (try? ChecksumOffload.insertIPv4HeaderChecksum(head, ipOffset: c.ipStart)) != nil else { return nil }
            seed = InternetChecksum.pseudoHeaderIPv4(ipHeader: UnsafeRawBufferPointer(ip), protocol: IPProtocol.tcp, length: UInt16(l4Length))
        } else {
            let payloadLength = ipLength - HeaderSize.ipv6
            guard payloadLength >= 0 else { return nil }
            Self.storeBE16(UInt16(payloadLength), in: ip, at: 4)
            seed = InternetChecksum.pseudoHeaderIPv6(ipHeader: UnsafeRawBufferPointer(ip), nextHeader: IPProtocol.tcp, length: UInt32(l4Length))
        }
        guard let seed else { return nil }
        Self.storeBE16(seed.folded, in: head, at: c.transportStart + 16)
        return VirtioNetHeader(flags: VirtioNetHeader.needsChecksum,
                               gsoType: (c.isIPv4 ? VirtioNetHeader.GSOType.tcpv4 : .tcpv6).rawValue,
                               headerLength: UInt16(c.headerLength), gsoSize: UInt16(c.segmentSize),
                               checksumStart: UInt16(c.transportStart), checksumOffset: 16)
    }

    /// A checksum "from start to the end, stored at field" is NEEDS_CSUM exactly (both sum
    /// the field's seed as found). IXSM is done here first, when the IP header lies in the
    /// head; TUCSE ≠ 0 goes the software way.
    private func checksumHeader(_ head: UnsafeMutableRawBufferPointer, length: Int, kind: Transmit.Kind, high: UInt64) -> VirtioNetHeader? {
        let start: Int, field: Int
        if kind == .legacy {
            guard Transmit.command(high: high) & Transmit.insertChecksum != 0 else { return nil }
            start = Transmit.legacyChecksumStart(high: transmit.firstHigh) // CSS: the first descriptor's (§3.3.3)
            field = Transmit.legacyChecksumOffset(high: high)
        } else {
            let c = transmit.context
            guard transmit.options & Transmit.insertTransportChecksum != 0, c.transportEnd == 0 else { return nil }
            start = c.transportStart
            field = c.transportField
        }
        guard start >= HeaderSize.ethernet, field >= start, field <= length - 2 else { return nil }
        if kind == .data, transmit.options & Transmit.insertIPChecksum != 0 {
            // `insert` refuses a range past the head's end: that packet takes the software path.
            let c = transmit.context
            guard (try? ChecksumOffload.insert(head, start: c.ipStart, end: TransmitContext.end(c.ipEnd, length: length), field: c.ipField)) != nil
            else { return nil }
        }
        return VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: UInt16(start), checksumOffset: UInt16(field - start))
    }

    private static func storeBE16(_ value: UInt16, in buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        guard offset >= 0, offset <= buffer.count - 2 else { return }
        buffer[offset] = UInt8(truncatingIfNeeded: value >> 8)
        buffer[offset + 1] = UInt8(truncatingIfNeeded: value)
    }
}
