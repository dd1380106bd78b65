/// UDP fragmentation offload ("UFO", virtio 1.2 §5.1.6.2 VIRTIO_NET_HDR_GSO_UDP): one
/// large UDP datagram over IPv4 sent as IP fragments (RFC 791 §2.3 "Fragmentation",
/// §3.2 "An Example Fragmentation Procedure"). Unlike TCP segmentation, only the first
/// fragment carries the UDP header, and the UDP checksum covers the whole datagram.
///
/// IPv6 UFO needs a fragment header whose identification the virtio-net header does not
/// carry, so it is refused.
public enum UDPFragmenter {
    /// Fragments `frame` (Ethernet + IPv4 + UDP datagram) so each fragment carries at most
    /// `fragmentSize` bytes of the datagram (rounded down to a multiple of 8, the unit of
    /// RFC 791's fragment offset) and fits `output`. With `completeChecksum`, the UDP
    /// checksum is computed over the whole datagram first (the NEEDS_CSUM case; whatever
    /// the field held is ignored). Fragments share the datagram's identification; DF is
    /// cleared. Returns the fragment count.
    @discardableResult
    public static func fragment(_ frame: ScatteredFrame, networkOffset: Int, fragmentSize: Int, completeChecksum: Bool,
                                into output: UnsafeMutableRawBufferPointer,
                                emit: (UnsafeRawBufferPointer) -> Void) throws(FrameError) -> Int {
        // The headers are copied out first and only that private copy is trusted.
        guard networkOffset >= HeaderSize.ethernet, networkOffset <= frame.length - HeaderSize.ipv4Minimum else {
            throw .truncated(needed: HeaderSize.ethernet + HeaderSize.ipv4Minimum, length: frame.length)
        }
        guard let fixed = output.slice(0, length: networkOffset + HeaderSize.ipv4Minimum) else {
            throw .tooLarge(length: networkOffset + HeaderSize.ipv4Minimum, limit: output.count)
        }
        frame.copyBytes(from: 0, into: fixed)
        let versionIHL = output[networkOffset]
        let ipLength = Int(versionIHL & 0x0F) * 4
        guard versionIHL >> 4 == 4, ipLength >= HeaderSize.ipv4Minimum else { throw .badHeader("UFO frame without a valid IPv4 header") }
        let l4 = networkOffset + ipLength
        guard l4 <= frame.length - HeaderSize.udp else { throw .truncated(needed: l4 + HeaderSize.udp, length: frame.length) }
        guard let headers = output.slice(0, length: l4) else { throw .tooLarge(length: l4, limit: output.count) }
        frame.copyBytes(from: 0, into: headers)
        // Copied twice from memory the guest may be rewriting: the length used must be the
        // one the header sent says.
        guard output[networkOffset] == versionIHL else { throw .badHeader("UFO frame's IPv4 header changed while it was read") }
        guard output[networkOffset + 9] == IPProtocol.udp else { throw .badHeader("UFO frame is not UDP") }
        let ip = UnsafeMutableRawBufferPointer(rebasing: output[networkOffset ..< l4])
        let fragmentField = UnsafeRawBufferPointer(ip).be16(at: 6) ?? 0
        guard fragmentField & 0x3FFF == 0 else { throw .badHeader("UFO frame is already a fragment") }

        let datagramLength = frame.length - l4
        guard datagramLength <= Int(UInt16.max) - ipLength else {
            throw .tooLarge(length: datagramLength + ipLength, limit: Int(UInt16.max))
        }
        let unit = min(fragmentSize, output.count - l4) & ~7
        guard unit >= HeaderSize.udp, fragmentSize >= SegmentationLimits.minimumSegmentSize else { throw .segmentSize(fragmentSize) }

        var udpChecksum: UInt16?
        if completeChecksum {
            guard var sum = InternetChecksum.pseudoHeaderIPv4(ipHeader: UnsafeRawBufferPointer(ip), protocol: IPProtocol.udp,
                                                              length: UInt16(datagramLength)),
                  let datagram = frame.checksum(from: l4, count: datagramLength)
            else { throw .truncated(needed: frame.length, length: frame.length) }
            sum.add(datagram)
            // Take the field's old value out again: subtracting is adding its complement.
            var old: UInt16 = 0
            withUnsafeMutableBytes(of: &old) { _ = frame.copyBytes(from: l4 + 6, into: $0) }
            sum.add(word: ~UInt16(bigEndian: old))
            let value = sum.checksum
            udpChecksum = value == 0 ? 0xFFFF : value // RFC 768: 0 means "no checksum"
        }

        var reader = ScatteredFrame.Reader(frame, at: l4)
        var sent = 0
        var count = 0
        repeat {
            let n = min(unit, datagramLength - sent)
            guard reader.read(into: UnsafeMutableRawBufferPointer(rebasing: output[l4 ..< l4 + n])) else {
                throw .truncated(needed: frame.length, length: frame.length)
            }
            if sent == 0, let c = udpChecksum { output.storeBE16(c, at: l4 + 6) }
            let moreFragments: UInt16 = sent + n < datagramLength ? 0x2000 : 0
            ip.storeBE16(UInt16(ipLength + n), at: 2)
            ip.storeBE16(UInt16(sent / 8) | moreFragments, at: 6) // DF cleared, offset in 8-byte units
            ip.storeBE16(0, at: 10)
            ip.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: ip[0 ..< ipLength])), at: 10)
            emit(UnsafeRawBufferPointer(rebasing: output[0 ..< l4 + n]))
            if count == 0 { keepOnlyCopiedOptions(ip, headerLength: ipLength) }
            sent += n
            count += 1
        } while sent < datagramLength
        return count
    }

    /// After the first fragment: options without the "copied" flag go in the first
    /// fragment only (RFC 791 §3.1, "copied flag"); in the others they become NOPs, which
    /// keeps the header's length, as Linux's `ip_options_fragment` does.
    static func keepOnlyCopiedOptions(_ ip: UnsafeMutableRawBufferPointer, headerLength: Int) {
        var at = HeaderSize.ipv4Minimum
        while at < headerLength, at < ip.count {
            let type = ip[at]
            if type == 0 { return }                    // end of options
            if type == 1 { at += 1; continue }        // no operation
            guard at + 1 < headerLength else { return }
            let length = Int(ip[at + 1])
            guard length >= 2, length <= headerLength - at else { return }
            if type & 0x80 == 0 {
                for i in at ..< at + length { ip[i] = 1 }
            }
            at += length
        }
    }
}
