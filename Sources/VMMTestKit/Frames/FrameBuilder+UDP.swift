extension FrameBuilder {
    /// A UDP datagram (RFC 768) with this flow's UDP ports. A computed checksum of 0 is
    /// sent as 0xFFFF, since 0 means "no checksum" (RFC 768; over IPv6 it is not allowed,
    /// RFC 8200 §8.1).
    func udpDatagram(ipv6: Bool = false, payload: [UInt8], checksum: Checksum = .full) -> [UInt8] {
        var u = [UInt8](be16: udpPorts.source) + [UInt8](be16: udpPorts.destination) + [UInt8](be16: UInt16(8 + payload.count)) + [0, 0] + payload
        var c = transportChecksum(u, ipv6: ipv6, proto: 17, kind: checksum)
        if checksum == .full, c == 0 { c = 0xFFFF }
        u.put16(c, at: 6)
        return u
    }

    /// A whole IPv4/UDP or IPv6/UDP frame, optionally VLAN-tagged, checksums filled in
    /// (the UDP one as `checksum` says).
    public func udp(ipv6: Bool = false, vlan: UInt16? = nil, payload: [UInt8], id: UInt16 = 0x1234, checksum: Checksum = .full) -> [UInt8] {
        packet(ipv6: ipv6, vlan: vlan, proto: 17, transport: udpDatagram(ipv6: ipv6, payload: payload, checksum: checksum), ipOptions: [], id: id)
    }
}
