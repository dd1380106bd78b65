import VMMTestKit

extension FrameBuilder {
    /// The flow these tests' frames belong to: the builder's default MACs and IPv4
    /// addresses, fe80::1234 → 2001:db8::1, TCP 12345 → 80, UDP 5000 → 53.
    static let net = FrameBuilder(sourceIPv6: [0xFE, 0x80] + [UInt8](repeating: 0, count: 12) + [0x12, 0x34],
                                  destinationIPv6: [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [0x01],
                                  tcpPorts: Ports(12345, 80), udpPorts: Ports(5000, 53))
}
