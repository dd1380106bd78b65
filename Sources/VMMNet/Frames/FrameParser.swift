/// Where the headers of an Ethernet frame are, as found by `FrameParser`.
///
/// Offsets count from the first byte of the destination MAC. Only what a NIC needs for
/// offloads, filters and counters; nothing here is copied out of the frame.
public struct ParsedFrame: Sendable, Equatable {
    public enum Network: Sendable, Equatable { case ipv4, ipv6 }

    /// The 802.1Q tag control information when the frame carries one (outermost tag).
    public var vlanTCI: UInt16?
    /// The EtherType after any VLAN tags.
    public var etherType: UInt16
    /// Where the network header starts (14, or 18 with one VLAN tag).
    public var networkOffset: Int
    /// IPv4 or IPv6 when `etherType` says so and the header is sound; nil otherwise.
    public var network: Network?
    /// IPv4: IHL × 4. IPv6: 40 plus the extension headers skipped before the transport.
    public var networkHeaderLength: Int = 0
    /// One past the IP packet's last byte as its length field says (frames may carry
    /// Ethernet padding after it). Equals the frame length when lengths were not checked.
    public var networkEnd: Int = 0
    /// The transport protocol (IPv4 protocol, or the IPv6 next header after the extensions).
    public var transportProtocol: UInt8 = 0
    /// The packet is an IP fragment (IPv4 MF or offset ≠ 0; IPv6 fragment header).
    public var isFragment = false
    /// An IPv6 routing header was skipped: the transport checksum's pseudo-header then
    /// uses the final destination (RFC 8200 §8.1), not the address in the IPv6 header.
    public var hasIPv6RoutingHeader = false
    /// Where the transport header starts; nil for non-first fragments and when the
    /// transport cannot be reached (ESP, no next header, unknown extension).
    public var transportOffset: Int?
    /// TCP data offset × 4, or 8 for UDP; nil for other protocols.
    public var transportHeaderLength: Int?

    /// The offset of the TCP/UDP payload: Ethernet + IP + transport headers.
    public var headerLength: Int? {
        guard let o = transportOffset, let l = transportHeaderLength else { return nil }
        return o + l
    }

    public var isTCP: Bool { transportProtocol == IPProtocol.tcp && transportHeaderLength != nil }
    public var isUDP: Bool { transportProtocol == IPProtocol.udp && transportHeaderLength != nil }
}

/// A non-trapping parser for Ethernet II frames: optional 802.1Q/802.1ad tags, IPv4
/// (RFC 791), IPv6 (RFC 8200) with extension headers skipped, TCP (RFC 9293) and UDP
/// (RFC 768). Every length field is checked against the buffer; anything inconsistent
/// answers nil.
public enum FrameParser {
    /// How strictly IP length fields are checked.
    public enum Lengths: Sendable {
        /// The buffer is the whole frame: IPv4 total length / IPv6 payload length must fit
        /// in it and cover the headers (Ethernet padding after the packet is allowed).
        case checked
        /// The buffer holds the headers only (TSO, where the length fields describe the
        /// unsegmented packet or are zero, as Linux's e1000 driver leaves them): the
        /// length fields are ignored and `networkEnd` is the buffer's end.
        case headersOnly
    }

    /// At most this many IPv6 extension headers are skipped (a hostile chain ends here).
    public static let maxIPv6ExtensionHeaders = 8

    public static func parse(_ frame: [UInt8], lengths: Lengths = .checked) -> ParsedFrame? {
        frame.withUnsafeBytes { parse($0, lengths: lengths) }
    }

    public static func parse(_ frame: UnsafeRawBufferPointer, lengths: Lengths = .checked) -> ParsedFrame? {
        guard var etherType = frame.be16(at: 12) else { return nil }
        var offset = HeaderSize.ethernet
        var tci: UInt16?
        // IEEE 802.1Q / 802.1ad: up to two stacked tags (QinQ); the outer TCI is reported.
        var tags = 0
        while etherType == EtherType.vlan || etherType == EtherType.qinq, tags < 2 {
            guard let t = frame.be16(at: offset), let inner = frame.be16(at: offset + 2) else { return nil }
            if tci == nil { tci = t }
            etherType = inner
            offset += HeaderSize.vlanTag
            tags += 1
        }
        var parsed = ParsedFrame(vlanTCI: tci, etherType: etherType, networkOffset: offset)
        switch etherType {
        case EtherType.ipv4:
            guard parseIPv4(frame, at: offset, lengths: lengths, into: &parsed) else { return nil }
        case EtherType.ipv6:
            guard parseIPv6(frame, at: offset, lengths: lengths, into: &parsed) else { return nil }
        default:
            return parsed
        }
        guard parseTransport(frame, into: &parsed) else { return nil }
        return parsed
    }

    /// RFC 791 §3.1: version 4, IHL ≥ 5, total length ≥ IHL × 4.
    @inline(__always)
    static func parseIPv4(_ frame: UnsafeRawBufferPointer, at offset: Int, lengths: Lengths, into parsed: inout ParsedFrame) -> Bool {
        guard let versionIHL = frame.byte(at: offset), versionIHL >> 4 == 4 else { return false }
        let headerLength = Int(versionIHL & 0x0F) * 4
        guard headerLength >= HeaderSize.ipv4Minimum, frame.count - offset >= headerLength,
              let totalLength = frame.be16(at: offset + 2),
              let fragment = frame.be16(at: offset + 6),
              let proto = frame.byte(at: offset + 9)
        else { return false }
        switch lengths {
        case .checked:
            guard Int(totalLength) >= headerLength, Int(totalLength) <= frame.count - offset else { return false }
            parsed.networkEnd = offset + Int(totalLength)
        case .headersOnly:
            parsed.networkEnd = frame.count
        }
        parsed.network = .ipv4
        parsed.networkHeaderLength = headerLength
        parsed.transportProtocol = proto
        // MF flag (bit 13) or a non-zero 13-bit fragment offset.
        parsed.isFragment = fragment & 0x3FFF != 0
        if fragment & 0x1FFF == 0 { parsed.transportOffset = offset + headerLength }
        return true
    }

    /// RFC 8200 §3–§4: the fixed header, then Hop-by-Hop, Routing, Destination Options,
    /// Fragment and AH headers are skipped (§4.1 order is not enforced; the count is bounded).
    static func parseIPv6(_ frame: UnsafeRawBufferPointer, at offset: Int, lengths: Lengths, into parsed: inout ParsedFrame) -> Bool {
        guard let version = frame.byte(at: offset), version >> 4 == 6,
              frame.count - offset >= HeaderSize.ipv6,
              let payloadLength = frame.be16(at: offset + 4),
              var next = frame.byte(at: offset + 6)
        else { return false }
        let end: Int
        switch lengths {
        case .checked:
            guard Int(payloadLength) <= frame.count - offset - HeaderSize.ipv6 else { return false }
            end = offset + HeaderSize.ipv6 + Int(payloadLength)
        case .headersOnly:
            end = frame.count
        }
        parsed.network = .ipv6
        parsed.networkEnd = end
        var cursor = offset + HeaderSize.ipv6
        var reachedTransport = false
        chain: for _ in 0 ... maxIPv6ExtensionHeaders {
            let extensionLength: Int
            switch next {
            case IPProtocol.hopByHop, IPProtocol.routing, IPProtocol.destinationOptions:
                if next == IPProtocol.routing { parsed.hasIPv6RoutingHeader = true }
                // Hdr Ext Len in 8-octet units, not counting the first 8 (RFC 8200 §4.3).
                guard let len = frame.byte(at: cursor + 1) else { return false }
                extensionLength = (Int(len) + 1) * 8
            case IPProtocol.fragment:
                // RFC 8200 §4.5: 8 bytes; offset in the upper 13 bits of bytes 2-3, M bit 0.
                guard let offsetAndFlags = frame.be16(at: cursor + 2) else { return false }
                parsed.isFragment = true
                if offsetAndFlags & 0xFFF8 != 0 {
                    // A later fragment: no transport header in it.
                    guard let n = frame.byte(at: cursor) else { return false }
                    next = n
                    parsed.transportProtocol = next
                    parsed.networkHeaderLength = cursor + 8 - offset
                    return cursor + 8 <= end
                }
                extensionLength = 8
            case IPProtocol.authentication:
                // RFC 4302 §2.2: Payload Len in 4-octet units, minus 2.
                guard let len = frame.byte(at: cursor + 1) else { return false }
                extensionLength = (Int(len) + 2) * 4
            default:
                reachedTransport = true
                break chain
            }
            guard let n = frame.byte(at: cursor), cursor + extensionLength <= end else { return false }
            next = n
            cursor += extensionLength
        }
        parsed.transportProtocol = next
        parsed.networkHeaderLength = cursor - offset
        // ESP, "no next header" or too long a chain: nothing we can find after it.
        if reachedTransport, next != IPProtocol.esp, next != IPProtocol.noNextHeader {
            parsed.transportOffset = cursor
        }
        return true
    }

    /// TCP data offset ≥ 5 (RFC 9293 §3.1) and UDP's 8 bytes must fit before `networkEnd`.
    @inline(__always)
    static func parseTransport(_ frame: UnsafeRawBufferPointer, into parsed: inout ParsedFrame) -> Bool {
        guard let offset = parsed.transportOffset else { return true }
        let available = parsed.networkEnd - offset
        switch parsed.transportProtocol {
        case IPProtocol.tcp:
            guard let dataOffset = frame.byte(at: offset + 12) else { return false }
            let length = Int(dataOffset >> 4) * 4
            guard length >= HeaderSize.tcpMinimum, length <= available else { return false }
            parsed.transportHeaderLength = length
        case IPProtocol.udp:
            guard HeaderSize.udp <= available else { return false }
            parsed.transportHeaderLength = HeaderSize.udp
        default:
            break
        }
        return true
    }
}
