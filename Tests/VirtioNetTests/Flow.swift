import VMMTestKit

extension FrameBuilder {
    /// The flow these tests' frames belong to: from a peer (52:54:00:aa:bb:cc) to the guest,
    /// TCP 40000 → 5201 (iperf3), UDP 5353 → 5353 (mDNS); addresses are the builder's defaults.
    static let virtioNet = FrameBuilder(sourceMAC: [0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC],
                                        tcpPorts: Ports(40000, 5201), udpPorts: Ports(5353, 5353))
}
