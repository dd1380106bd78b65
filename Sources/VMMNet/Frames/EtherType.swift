/// EtherType and IP protocol numbers the frame helpers understand (IEEE 802.3 / IANA).
public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    /// IEEE 802.1Q customer VLAN tag protocol identifier (TPID).
    public static let vlan: UInt16 = 0x8100
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    public static let qinq: UInt16 = 0x88A8
    public static let ipv6: UInt16 = 0x86DD
}

/// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers").
public enum IPProtocol {
    public static let hopByHop: UInt8 = 0
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let routing: UInt8 = 43
    public static let fragment: UInt8 = 44
    public static let esp: UInt8 = 50
    public static let authentication: UInt8 = 51
    public static let icmpv6: UInt8 = 58
    public static let noNextHeader: UInt8 = 59
    public static let destinationOptions: UInt8 = 60
}

/// Fixed sizes of the headers the helpers build and parse.
public enum HeaderSize {
    /// Destination, source, EtherType (IEEE 802.3 §3.1.1), no FCS.
    public static let ethernet = 14
    /// TPID + TCI (IEEE 802.1Q §9.6).
    public static let vlanTag = 4
    public static let ipv4Minimum = 20
    public static let ipv6 = 40
    public static let tcpMinimum = 20
    public static let udp = 8
}
