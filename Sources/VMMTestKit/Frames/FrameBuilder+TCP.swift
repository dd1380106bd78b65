extension FrameBuilder {
    /// A TCP header (RFC 9293 §3.1) with this flow's ports, window 65535, urgent pointer 0,
    /// `options` (a multiple of 4 bytes) and checksum 0.
    public func tcpHeader(seq: UInt32, ack: UInt32 = 1, flags: TCPFlags, options: [UInt8] = []) -> [UInt8] {
        [UInt8](be16: tcpPorts.source) + [UInt8](be16: tcpPorts.destination) + [UInt8](be32: seq) + [UInt8](be32: ack)
            + [UInt8((20 + options.count) / 4) << 4, flags.rawValue] + [UInt8](be16: 65535) + [0, 0, 0, 0] + options
    }

    /// A TCP segment (header and `payload`) with its checksum over the IPv4 or IPv6
    /// pseudo-header of this flow's addresses.
    func tcpSegment(ipv6: Bool = false, seq: UInt32 = 1000, ack: UInt32 = 1, flags: TCPFlags = [.ack, .psh],
                    options: [UInt8] = [], payload: [UInt8], checksum: Checksum = .full) -> [UInt8] {
        var t = tcpHeader(seq: seq, ack: ack, flags: flags, options: options) + payload
        t.put16(transportChecksum(t, ipv6: ipv6, proto: 6, kind: checksum), at: 16)
        return t
    }

    /// A whole IPv4/TCP or IPv6/TCP frame, optionally VLAN-tagged, checksums filled in
    /// (the TCP one as `checksum` says). `ipOptions` apply to IPv4 only.
    public func tcp(ipv6: Bool = false, vlan: UInt16? = nil, seq: UInt32 = 1000, ack: UInt32 = 1, flags: TCPFlags = [.ack, .psh],
                    payload: [UInt8], tcpOptions: [UInt8] = [], ipOptions: [UInt8] = [], id: UInt16 = 0x1234,
                    checksum: Checksum = .full) -> [UInt8] {
        let segment = tcpSegment(ipv6: ipv6, seq: seq, ack: ack, flags: flags, options: tcpOptions, payload: payload, checksum: checksum)
        return packet(ipv6: ipv6, vlan: vlan, proto: 6, transport: segment, ipOptions: ipOptions, id: id)
    }

    /// The value for a TCP/UDP checksum field of `segment` sent over this flow.
    func transportChecksum(_ segment: [UInt8], ipv6: Bool, proto: UInt8, kind: Checksum) -> UInt16 {
        let pseudo = ipv6 ? Self.pseudoHeader(source: sourceIPv6, destination: destinationIPv6, proto: proto, length: segment.count)
                          : Self.pseudoHeader(source: sourceIPv4, destination: destinationIPv4, proto: proto, length: segment.count)
        switch kind {
        case .full: return ~NaiveChecksum.sum(segment, initial: NaiveChecksum.sum(pseudo))
        case .partial: return NaiveChecksum.sum(pseudo)
        case .none: return 0
        }
    }

    /// `transport` behind an IPv4 or IPv6 header, in an Ethernet frame.
    func packet(ipv6: Bool, vlan: UInt16?, proto: UInt8, transport: [UInt8], ipOptions: [UInt8], id: UInt16) -> [UInt8] {
        let ip = ipv6 ? ipv6Header(payloadLength: transport.count, next: proto)
                      : ipv4Header(payloadLength: transport.count, proto: proto, id: id, options: ipOptions)
        return ethernet(type: ipv6 ? 0x86DD : 0x0800, vlan: vlan, payload: ip + transport)
    }
}
