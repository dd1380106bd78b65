/// Builds test frames byte by byte, checksums included, without the code under test
/// (checksums come from `NaiveChecksum`), so a test can check a device or parser against
/// frames whose every byte it knows.
///
/// A builder holds the endpoints of one flow: MACs, IPv4 and IPv6 addresses, TCP and UDP
/// ports. Everything else (sequence numbers, flags, IPv4 identification, payload) is a
/// parameter of the method that builds the frame. Layouts: Ethernet II with an optional
/// IEEE 802.1Q tag, IPv4 (RFC 791), IPv6 (RFC 8200), TCP (RFC 9293), UDP (RFC 768),
/// ARP (RFC 826), ICMP echo (RFC 792), DHCP (RFC 2131).
public struct FrameBuilder: Sendable {
    /// A transport flow's source and destination ports.
    public struct Ports: Sendable {
        public var source: UInt16, destination: UInt16
        public init(_ source: UInt16, _ destination: UInt16) { self.source = source; self.destination = destination }
    }

    /// What goes in a TCP or UDP checksum field.
    public enum Checksum: Sendable {
        /// The complemented sum over pseudo-header and segment: a frame as it is on the wire.
        case full
        /// The pseudo-header's sum, not complemented: what Linux's CHECKSUM_PARTIAL leaves
        /// for the device to finish (virtio-net's VIRTIO_NET_HDR_F_NEEDS_CSUM, TSO).
        case partial
        /// Zero: "no checksum", allowed for UDP over IPv4 only (RFC 768).
        case none
    }

    /// The all-ones Ethernet broadcast address.
    public static let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    /// The Ethernet addresses (6 bytes each).
    public var destinationMAC: [UInt8], sourceMAC: [UInt8]
    /// The IPv4 addresses (4 bytes each), also those of ARP and of the IPv4 pseudo-header.
    public var sourceIPv4: [UInt8], destinationIPv4: [UInt8]
    /// The IPv6 addresses (16 bytes each), also those of the IPv6 pseudo-header.
    public var sourceIPv6: [UInt8], destinationIPv6: [UInt8]
    /// The ports of TCP segments and UDP datagrams.
    public var tcpPorts: Ports, udpPorts: Ports

    /// Defaults: QEMU's default guest MAC as destination, slirp's guest (10.0.2.15) and
    /// gateway (10.0.2.2) as IPv4 source and destination, fe80::1 → fe80::2.
    public init(destinationMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
                sourceMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF],
                sourceIPv4: [UInt8] = [10, 0, 2, 15], destinationIPv4: [UInt8] = [10, 0, 2, 2],
                sourceIPv6: [UInt8] = [0xFE, 0x80] + [UInt8](repeating: 0, count: 13) + [1],
                destinationIPv6: [UInt8] = [0xFE, 0x80] + [UInt8](repeating: 0, count: 13) + [2],
                tcpPorts: Ports = Ports(40000, 80), udpPorts: Ports = Ports(5000, 6000)) {
        self.destinationMAC = destinationMAC
        self.sourceMAC = sourceMAC
        self.sourceIPv4 = sourceIPv4
        self.destinationIPv4 = destinationIPv4
        self.sourceIPv6 = sourceIPv6
        self.destinationIPv6 = destinationIPv6
        self.tcpPorts = tcpPorts
        self.udpPorts = udpPorts
    }

    /// The same flow sent to another MAC (a broadcast, a filtered address, the other way).
    public func addressed(to destinationMAC: [UInt8]) -> FrameBuilder {
        var b = self
        b.destinationMAC = destinationMAC
        return b
    }

    /// An Ethernet II frame (no FCS): destination, source, an 802.1Q tag (TPID 0x8100 and
    /// `vlan` as TCI) when given, EtherType, payload. The default EtherType 0x88B5 is IEEE
    /// 802's "local experimental" type, for frames whose payload nothing should parse.
    /// An empty payload gives the header alone.
    public func ethernet(type: UInt16 = 0x88B5, vlan: UInt16? = nil, payload: [UInt8] = []) -> [UInt8] {
        var f = destinationMAC + sourceMAC
        if let tci = vlan { f += [0x81, 0x00] + [UInt8](be16: tci) }
        return f + [UInt8](be16: type) + payload
    }
}
