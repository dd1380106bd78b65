extension FrameBuilder {
    /// A DHCPDISCOVER (RFC 2131 §4.4.1) from `mac` with transaction `xid`, broadcast flag
    /// set, from 0.0.0.0:68 to 255.255.255.255:67, only option 53 (message type 1).
    public static func dhcpDiscover(mac: [UInt8], xid: UInt32) -> [UInt8] {
        var bootp: [UInt8] = [1, 1, 6, 0] + [UInt8](be32: xid) + [0, 0, 0x80, 0] + [UInt8](repeating: 0, count: 16)
        bootp += mac + [UInt8](repeating: 0, count: 10) + [UInt8](repeating: 0, count: 192)
        bootp += [99, 130, 83, 99, 53, 1, 1, 255]
        let flow = FrameBuilder(destinationMAC: broadcast, sourceMAC: mac, sourceIPv4: [0, 0, 0, 0], destinationIPv4: [255, 255, 255, 255],
                                udpPorts: Ports(68, 67))
        return flow.udp(payload: bootp, id: 1)
    }
}
