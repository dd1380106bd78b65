/// Where the headers of a frame to segment are, and how large each segment's payload is:
/// what an E1000 TCP/IP context descriptor says (Intel 8254x SDM §3.3.6: IPCSS, TUCSS,
/// HDRLEN, MSS, TUCMD.IP, TUCMD.TCP) or what parsing a virtio-net GSO frame finds.
/// `TSOSegmenter` checks it against the frame before use.
public struct SegmentationLayout: Sendable, Equatable {
    public enum Transport: Sendable, Equatable { case tcp, udp }

    public var network: ParsedFrame.Network
    public var transport: Transport
    /// Start of the IP header (IPCSS). At least 14: the Ethernet header comes first.
    public var networkOffset: Int
    /// Start of the TCP/UDP header (TUCSS).
    public var transportOffset: Int
    /// Bytes copied in front of every segment's payload (HDRLEN).
    public var headerLength: Int
    /// Payload bytes per segment, the last one may be shorter (MSS / gso_size).
    public var segmentSize: Int

    public init(network: ParsedFrame.Network, transport: Transport, networkOffset: Int,
                transportOffset: Int, headerLength: Int, segmentSize: Int) {
        self.network = network; self.transport = transport
        self.networkOffset = networkOffset; self.transportOffset = transportOffset
        self.headerLength = headerLength; self.segmentSize = segmentSize
    }

    /// The layout of a parsed TCP or UDP frame (its headers, not its claimed `hdr_len`).
    public init?(_ parsed: ParsedFrame, segmentSize: Int) {
        guard let network = parsed.network, let l4 = parsed.transportOffset,
              let headerLength = parsed.headerLength, parsed.isTCP || parsed.isUDP
        else { return nil }
        self.init(network: network, transport: parsed.isTCP ? .tcp : .udp, networkOffset: parsed.networkOffset,
                  transportOffset: l4, headerLength: headerLength, segmentSize: segmentSize)
    }
}
