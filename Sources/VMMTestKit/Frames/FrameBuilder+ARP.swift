extension FrameBuilder {
    /// An ARP request (RFC 826) for `targetIP`, broadcast from this flow's source MAC and
    /// IPv4 address: Ethernet hardware, IPv4 protocol, target hardware address zero.
    public func arpRequest(for targetIP: [UInt8]) -> [UInt8] {
        let arp = arpHeader(operation: 1) + sourceMAC + sourceIPv4 + [0, 0, 0, 0, 0, 0] + targetIP
        return addressed(to: Self.broadcast).ethernet(type: 0x0806, payload: arp)
    }

    /// An ARP reply (RFC 826): this flow's source MAC and IPv4 address answer the
    /// destination's request.
    public func arpReply() -> [UInt8] {
        ethernet(type: 0x0806, payload: arpHeader(operation: 2) + sourceMAC + sourceIPv4 + destinationMAC + destinationIPv4)
    }

    private func arpHeader(operation: UInt16) -> [UInt8] {
        [UInt8](be16: 1) + [UInt8](be16: 0x0800) + [6, 4] + [UInt8](be16: operation)
    }
}
