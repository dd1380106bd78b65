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
///
/// IPv4 fragments carry no ports after the first, so they passed the socket count: a
/// guest that sent first fragments while under the limit and the rest later had libslirp
/// reassemble each datagram and open a socket for it (700 against 512, measured). And
/// libslirp keeps every datagram being reassembled for up to 30 s (`IPFRAGTTL` 60 at
/// 2 Hz, in its ip.h) on one list it scans per fragment, with no limit. So at most
/// `fragmentGroupLimit` datagrams (source, destination, id, protocol) may be in
/// reassembly at once: one leaves with its last fragment (MF clear), or after 30 s;
/// fragments of a further one are dropped (would-block), and at the socket limit no new
/// datagram is admitted (at most that many more sockets than the limit, not without end).
///
/// Connections libslirp accepts on a `hostfwd` listener come from the host side, not the
/// guest: they are counted apart, up to `forwardedConnectionLimit`, and at that many the
/// listeners are not watched (`SlirpPollSet`), so further ones wait in the kernel's backlog.
/// Counted with the guest's, remote clients holding connections took the guest's budget
/// (its DNS and DHCP were dropped), and past the descriptor limit a listener whose
/// accept failed with EMFILE stayed readable and the loop spun.
struct SlirpFlowGuard {
    static let hostSocketLimit = 512
    static let forwardedConnectionLimit = 256
    /// `forwardedConnectionLimit`, or fewer in tests (libslirp listens with a backlog of
    /// one, so hundreds of connections take many seconds of SYN retries to come in).
    var forwardedLimit = Self.forwardedConnectionLimit
    static let fragmentGroupLimit = 256
    static let fragmentLifetime: UInt64 = 30_000_000_000
    private(set) var hostSockets = 0
    /// Sockets of connections accepted on a `hostfwd` listener.
    private(set) var forwardedConnections: Set<Int32> = []
    var acceptsPaused: Bool { forwardedConnections.count >= forwardedLimit }
    /// Datagrams whose fragments passed, and when each stops counting (ns, monotonic).
    private var fragmentGroups: [FragmentGroup: UInt64] = [:]

    private struct FragmentGroup: Hashable {
        let source: UInt32, destination: UInt32, id: UInt16, proto: UInt8
    }
    /// The first 8 bytes of libslirp's IPv6 prefix (fec0::/64, `UserBackend`).
    static let ipv6Prefix: [UInt8] = [0xFE, 0xC0, 0, 0, 0, 0, 0, 0]

    /// libslirp opened `fd`; `accepted`: on a listener (`SlirpPollSet.acceptingNow`).
    mutating func registered(fd: Int32, accepted: Bool = false) {
        guard fd >= 0 else { return }
        if accepted { forwardedConnections.insert(fd) } else { hostSockets += 1 }
    }

    mutating func unregistered(fd: Int32) {
        guard fd >= 0, forwardedConnections.remove(fd) == nil else { return }
        hostSockets = max(0, hostSockets - 1)
    }

    /// Why `frame` must not reach libslirp, or nil. `now`: monotonic nanoseconds.
    mutating func refusal(_ frame: UnsafeRawBufferPointer, now: UInt64) -> DropReason? {
        guard let parsed = FrameParser.parse(frame), let network = parsed.network else { return nil }
        if network == .ipv4, parsed.isFragment { return fragmentRefusal(frame, parsed, now: now) }
        guard let transport = parsed.transportOffset else { return nil }
        let icmpv6EchoRequest: UInt8 = 128
        if network == .ipv6, parsed.transportProtocol == IPProtocol.icmpv6, frame.byte(at: transport) == icmpv6EchoRequest {
            let destination = parsed.networkOffset + 24   // RFC 8200 §3: after version…hop limit and the source
            let prefix = (0 ..< 8).map { frame.byte(at: destination + $0) }
            if prefix != Self.ipv6Prefix.map(Optional.some) { return .filtered }
        }
        guard hostSockets >= Self.hostSocketLimit else { return nil }
        switch parsed.transportProtocol {
        case IPProtocol.udp, IPProtocol.icmp:
            return .wouldBlock
        case IPProtocol.icmpv6:
            return frame.byte(at: transport) == icmpv6EchoRequest ? .wouldBlock : nil
        case IPProtocol.tcp:
            // SYN without ACK (RFC 9293 §3.1: flags in byte 13): a new connection.
            guard let flags = frame.byte(at: transport + 13) else { return nil }
            return flags & 0x12 == 0x02 ? .wouldBlock : nil
        default:
            return nil
        }
    }

    private mutating func fragmentRefusal(_ frame: UnsafeRawBufferPointer, _ parsed: ParsedFrame, now: UInt64) -> DropReason? {
        let ip = parsed.networkOffset
        guard let source = frame.be32(at: ip + 12), let destination = frame.be32(at: ip + 16),
              let id = frame.be16(at: ip + 4), let flags = frame.byte(at: ip + 6) else { return nil }
        let group = FragmentGroup(source: source, destination: destination, id: id, proto: parsed.transportProtocol)
        let last = flags & 0x20 == 0   // MF clear (RFC 791 §3.1)
        if let until = fragmentGroups[group], until > now {
            if last { fragmentGroups[group] = nil }
            return nil
        }
        guard hostSockets < Self.hostSocketLimit else { return .wouldBlock }
        if fragmentGroups.count >= Self.fragmentGroupLimit {
            fragmentGroups = fragmentGroups.filter { $0.value > now }
            guard fragmentGroups.count < Self.fragmentGroupLimit else { return .wouldBlock }
        }
        if !last { fragmentGroups[group] = now &+ Self.fragmentLifetime }
        return nil
    }
}
