import VMMTestKit

/// The addresses of the frames the benchmarks push. They come from the command line so
/// that over a TAP the namespace's kernel accepts them (its MAC and IP) and consumes them.
package struct FrameAddressing {
    package var deviceMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    package var peerMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF]
    package var deviceIP: [UInt8] = [10, 77, 0, 2]
    package var peerIP: [UInt8] = [10, 77, 0, 1]
    /// UDP discard: nothing listens in the namespace, the kernel drops the datagram.
    package var port: UInt16 = 9

    package init() {}

    /// The flow device → peer, or peer → device; from port 40000 to `port`.
    package func flow(towardDevice: Bool) -> FrameBuilder {
        let ports = FrameBuilder.Ports(40000, port)
        return towardDevice
            ? FrameBuilder(destinationMAC: deviceMAC, sourceMAC: peerMAC, sourceIPv4: peerIP, destinationIPv4: deviceIP, tcpPorts: ports, udpPorts: ports)
            : FrameBuilder(destinationMAC: peerMAC, sourceMAC: deviceMAC, sourceIPv4: deviceIP, destinationIPv4: peerIP, tcpPorts: ports, udpPorts: ports)
    }

    /// The frame of `size`: for `.tso` one 64 KiB TCP send whose checksum field holds the
    /// pseudo-header sum, as a driver leaves it for TSO (NEEDS_CSUM, virtio §5.1.6.2);
    /// otherwise an IPv4/UDP datagram of exactly `size.length` bytes (Ethernet header onward,
    /// no FCS) with UDP checksum 0 (allowed on IPv4). IPv4 identification 0; each payload
    /// byte is its offset in the frame.
    package func frame(_ size: FrameSize, towardDevice: Bool) -> [UInt8] {
        let flow = flow(towardDevice: towardDevice)
        if size == .tso {
            return flow.tcp(payload: Self.offsets(from: TSO.headerLength, to: size.length), id: 0, checksum: .partial)
        }
        return flow.udp(payload: Self.offsets(from: 14 + 20 + 8, to: size.length), id: 0, checksum: .none)
    }

    /// Bytes `start ..< end`, each the low byte of its offset.
    private static func offsets(from start: Int, to end: Int) -> [UInt8] { (start ..< max(start, end)).map { UInt8(truncatingIfNeeded: $0) } }

    /// "52:54:00:12:34:56" → bytes; nil when malformed.
    package static func parseMAC(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        return parts.count == 6 ? parts : nil
    }

    /// "10.77.0.1" → bytes; nil when malformed.
    package static func parseIPv4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".").compactMap { UInt8($0) }
        return parts.count == 4 ? parts : nil
    }
}
