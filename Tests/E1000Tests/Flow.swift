import VMMTestKit

extension FrameBuilder {
    /// The flow these tests' frames belong to: from a peer (02:00:00:00:00:01, 10.0.0.1,
    /// fd00::1) to the NIC (52:54:00:12:34:56, 10.0.0.2, fd00::2), TCP 40000 → 80,
    /// UDP 5000 → 6000. Its TCP segments carry acknowledgment number 0 (`ack: 0`).
    static let e1000 = FrameBuilder(sourceMAC: [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
                                    sourceIPv4: [10, 0, 0, 1], destinationIPv4: [10, 0, 0, 2],
                                    sourceIPv6: [0xFD] + [UInt8](repeating: 0, count: 14) + [1],
                                    destinationIPv6: [0xFD] + [UInt8](repeating: 0, count: 14) + [2],
                                    tcpPorts: Ports(40000, 80), udpPorts: Ports(5000, 6000))
}
