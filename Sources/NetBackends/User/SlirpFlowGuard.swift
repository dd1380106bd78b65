import VMMCore
import VMMNet

/// What the guest may make libslirp do on the host, checked before a frame reaches it.
///
/// libslirp opens a host socket for every guest UDP source (address and port, kept
/// 240 s), every TCP SYN and every ICMP echo to an outside address (kept 240 s without a
/// reply), with no limit of its own: a guest rotating source ports took every descriptor
/// the process had (QMP clients, captures and reconnects then failed with EMFILE). The
/// sockets are counted through libslirp's register/unregister_poll_fd callbacks, and at
/// `hostSocketLimit` frames that could open another are dropped (counted as
/// would-block) until some close; established TCP connections go on.
///
/// And libslirp 4.7 answers each ICMPv6 echo to an address outside its own prefix with
/// a g_critical log line ("external icmpv6 not supported yet") and nothing else, so a
/// guest's `ping -6 -f` flooded stderr: those are dropped here (filtered).
struct SlirpFlowGuard {
    static let hostSocketLimit = 512
    private(set) var hostSockets = 0
    /// The first 8 bytes of libslirp's IPv6 prefix (fec0::/64, `UserBackend`).
    static let ipv6Prefix: [UInt8] = [0xFE, 0xC0, 0, 0, 0, 0, 0, 0]

    private static func byte(_ frame: UnsafeRawBufferPointer, _ offset: Int) -> UInt8? {
        offset >= 0 && offset < frame.count ? frame[offset] : nil
    }

    mutating func registered(fd: Int32) { if fd >= 0 { hostSockets += 1 } }
    mutating func unregistered(fd: Int32) { if fd >= 0 { hostSockets = max(0, hostSockets - 1) } }

    /// Why `frame` must not reach libslirp, or nil.
    func refusal(_ frame: UnsafeRawBufferPointer) -> DropReason? {
        guard let parsed = FrameParser.parse(frame), let network = parsed.network, let transport = parsed.transportOffset else { return nil }
        let icmpv6EchoRequest: UInt8 = 128
        if network == .ipv6, parsed.transportProtocol == IPProtocol.icmpv6, Self.byte(frame, transport) == icmpv6EchoRequest {
            let destination = parsed.networkOffset + 24   // RFC 8200 §3: after version…hop limit and the source
            let prefix = (0 ..< 8).map { Self.byte(frame, destination + $0) }
            if prefix != Self.ipv6Prefix.map(Optional.some) { return .filtered }
        }
        guard hostSockets >= Self.hostSocketLimit else { return nil }
        switch parsed.transportProtocol {
        case IPProtocol.udp, IPProtocol.icmp:
            return .wouldBlock
        case IPProtocol.icmpv6:
            return Self.byte(frame, transport) == icmpv6EchoRequest ? .wouldBlock : nil
        case IPProtocol.tcp:
            // SYN without ACK (RFC 9293 §3.1: flags in byte 13): a new connection.
            guard let flags = Self.byte(frame, transport + 13) else { return nil }
            return flags & 0x12 == 0x02 ? .wouldBlock : nil
        default:
            return nil
        }
    }
}
