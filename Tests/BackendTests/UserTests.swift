#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import NetBackends
import Testing
import VMMCore
import VMMNet
import VMMTestKit

/// A loopback TCP listener on the host.
final class HostListener {
    let fd: Int32
    let port: UInt16
    init() {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(s, 4)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        fd = s
        port = UInt16(bigEndian: addr.sin_port)
    }
    deinit { close(fd) }

    func accept(within ms: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, ms) == 1 else { return false }
        let c = Glibc.accept(fd, nil, nil)
        if c >= 0 { close(c) }
        return c >= 0
    }
}

/// A port nobody listens on (bound, read back, released).
func freeLoopbackPort() -> UInt16 { HostListener().port }

@Suite(.serialized) struct UserTests {
    static let mac: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    static let guestIP: [UInt8] = [10, 0, 2, 15], gatewayIP: [UInt8] = [10, 0, 2, 2]
    static let gatewayMAC: [UInt8] = [0x52, 0x55, 0x0A, 0x00, 0x02, 0x02]
    /// The fake guest's frames to the gateway.
    static let guest = FrameBuilder(destinationMAC: gatewayMAC, sourceMAC: mac, sourceIPv4: guestIP, destinationIPv4: gatewayIP)

    func start(_ options: String = "", forwardedConnectionLimit: Int = SlirpFlowGuard.forwardedConnectionLimit) throws
        -> (UserBackend, RecordingReceiver, RunningLoop) {
        var o = try DeviceSpec.parse("e1000,net=user" + options).options
        guard case let .user(config) = try NetBackendConfig.take(from: &o).kind else { throw NetBackendError.unknownBackend("?") }
        let running = try RunningLoop()
        let backend = try UserBackend(config: config, eventLoop: running.loop, clock: running.loop,
                                      forwardedConnectionLimit: forwardedConnectionLimit)
        let receiver = RecordingReceiver { [weak backend] frame in
            if Received.isARPRequest(frame, for: UserTests.guestIP), frame.count >= 42 {
                backend?.send(FrameBuilder(destinationMAC: Array(frame[22 ..< 28]), sourceMAC: UserTests.mac, sourceIPv4: UserTests.guestIP,
                                           destinationIPv4: Array(frame[28 ..< 32])).arpReply())
            }
        }
        backend.start(receiver: receiver)
        return (backend, receiver, running)
    }

    /// The guest's frames wait for the loop in a queue of at most `transmitQueueLimit`;
    /// past it a send is refused and counted, and the queue is handed to libslirp whole
    /// in the loop's next turn (one wake-up for the lot).
    @Test func theTransmitQueueIsBoundedAndHandedOverInOneTurn() throws {
        let (backend, _, running) = try start()
        defer { backend.stop(); _ = running }
        let held = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
        running.loop.execute { holding.signal(); held.wait() }   // the loop busy elsewhere
        #expect(holding.wait(timeout: .now() + 5) == .success)
        let frame = UserTests.guest.udp(payload: [1, 2, 3, 4])
        var results: [SendResult] = []
        for _ in 0 ..< UserBackend.transmitQueueLimit + 10 { results.append(backend.send(frame)) }
        #expect(results.prefix(UserBackend.transmitQueueLimit).allSatisfy { $0 == .sent })
        #expect(results.suffix(10).allSatisfy { $0 == .dropped(.wouldBlock) })
        #expect(backend.counters.drops(.wouldBlock) == 10)
        held.signal()
        let drained = DispatchSemaphore(value: 0)
        running.loop.execute { drained.signal() }   // after the hand-over queued behind the hold
        #expect(drained.wait(timeout: .now() + 5) == .success)
        #expect(backend.send(frame) == .sent)         // room again
    }

    /// A queue handed over whole had libslirp's answers to all of it delivered at once,
    /// past the receive queue's 256 frames (300 ARP requests in a burst lost 44 replies);
    /// it is handed over in chunks, each one's answers delivered before the next.
    @Test func aBurstOfRequestsGetsEveryAnswer() throws {
        let (backend, receiver, running) = try start()
        defer { backend.stop(); _ = running }
        let held = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
        running.loop.execute { holding.signal(); held.wait() }
        #expect(holding.wait(timeout: .now() + 5) == .success)
        let request = UserTests.guest.arpRequest(for: UserTests.gatewayIP)
        for _ in 0 ..< 300 { #expect(backend.send(request) == .sent) }
        held.signal()
        let drained = DispatchSemaphore(value: 0)
        running.loop.execute { drained.signal() }
        #expect(drained.wait(timeout: .now() + 5) == .success)
        #expect(receiver.frames.count == 300)
        #expect(backend.counters.drops(.wouldBlock) == 0)
    }

    /// libslirp opens a host socket per guest UDP source port (kept 240 s); a guest
    /// rotating ports took every descriptor the process had. At the limit, frames that
    /// would open more are dropped and counted; ICMPv6 echoes to outside addresses (one
    /// g_critical line each in libslirp 4.7) never reach it.
    @Test func theGuestCannotTakeEveryHostDescriptor() throws {
        let (backend, _, running) = try start()
        defer { backend.stop(); _ = running }
        func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0 }
        let before = openDescriptors()
        for port in 0 ..< 1_500 {
            var b = UserTests.guest
            b.udpPorts = FrameBuilder.Ports(UInt16(20_000 + port), 9)
            while backend.send(b.udp(payload: [1, 2, 3, 4])) == .dropped(.wouldBlock) { usleep(1_000) }  // the transmit queue is full
        }
        var waited = 0
        while backend.counters.drops(.wouldBlock) == 0, waited < 5_000 { usleep(1_000); waited += 1 }
        usleep(100_000)
        #expect(openDescriptors() - before <= SlirpFlowGuard.hostSocketLimit + 16)
        #expect(backend.counters.drops(.wouldBlock) > 0)
        var v6 = UserTests.guest
        v6.destinationIPv6 = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        let echo = v6.ethernet(type: 0x86DD, payload: v6.ipv6Header(payloadLength: 8, next: 58) + [128, 0, 0, 0, 0, 1, 0, 1])
        let filtered = backend.counters.drops(.filtered), sent = backend.counters.txFrames.load(ordering: .relaxed)
        _ = backend.send(echo)
        waited = 0
        while backend.counters.drops(.filtered) == filtered, waited < 2_000 { usleep(1_000); waited += 1 }
        #expect(backend.counters.drops(.filtered) == filtered + 1)
        // Counted once: dropped, not also sent (it was counted sent when queued).
        #expect(backend.counters.txFrames.load(ordering: .relaxed) == sent)
    }

    /// IPv4 fragments after the first carry no ports, so they passed the socket count,
    /// and libslirp keeps every datagram in reassembly for 30 s on one list. At most
    /// `fragmentGroupLimit` datagrams may be in reassembly at once (one leaves with its
    /// last fragment), and none starts at the socket limit.
    @Test func fragmentsCountAgainstTheLimits() {
        var flowGuard = SlirpFlowGuard()
        let b = UserTests.guest
        func fragment(id: UInt16, first: Bool) -> [UInt8] {
            var ip = b.ipv4Header(payloadLength: 8, proto: 17, id: id)
            ip[6] = first ? 0x20 : 0; ip[7] = first ? 0 : 1   // MF, or fragment offset 8 bytes
            return b.ethernet(type: 0x0800, payload: ip + [UInt8](repeating: 0, count: 8))
        }
        func refusal(_ frame: [UInt8], at t: UInt64) -> DropReason? { frame.withUnsafeBytes { flowGuard.refusal($0, now: t) } }
        // Steady fragmented traffic (each datagram's fragments in turn) is never refused.
        for id in UInt16(1000) ..< 3000 {
            #expect(refusal(fragment(id: id, first: true), at: 0) == nil && refusal(fragment(id: id, first: false), at: 0) == nil)
        }
        for id in 0 ..< UInt16(SlirpFlowGuard.fragmentGroupLimit) { #expect(refusal(fragment(id: id, first: true), at: 0) == nil) }
        #expect(refusal(fragment(id: 999, first: true), at: 1) == .wouldBlock)    // one too many
        #expect(refusal(fragment(id: 0, first: false), at: 1) == nil)              // datagram 0's last fragment: it leaves
        #expect(refusal(fragment(id: 999, first: true), at: 2) == nil)            // so 999 fits
        let later = SlirpFlowGuard.fragmentLifetime + 1
        #expect(refusal(fragment(id: 4000, first: true), at: later) == nil)       // the unfinished ones expired
        for fd in 0 ..< Int32(SlirpFlowGuard.hostSocketLimit) { flowGuard.registered(fd: fd) }
        #expect(refusal(fragment(id: 4001, first: true), at: later + 1) == .wouldBlock)   // at the socket limit: no new datagram
        #expect(refusal(fragment(id: 4000, first: false), at: later + 1) == nil)          // one already admitted completes
    }

    @Test func dhcpOfferArpAndTcpThroughTheNat() throws {
        let (backend, receiver, running) = try start()
        defer { backend.stop() }
        #expect(backend.send(FrameBuilder.dhcpDiscover(mac: Self.mac, xid: 0x1234_5678)) == .sent)
        #expect(eventually(3) { receiver.first { Received.udpPorts($0)?.sport == 67 } != nil })
        let offer = try #require(receiver.first { Received.udpPorts($0)?.sport == 67 }.flatMap { Received.udpPorts($0) })
        #expect(offer.dport == 68)
        #expect(Array(offer.payload[16 ..< 20]) == Self.guestIP, "yiaddr is dhcp-start")
        #expect(offer.payload.count > 243 && offer.payload[240 ..< 243] == [53, 1, 2], "DHCPOFFER")

        #expect(backend.send(Self.guest.arpRequest(for: Self.gatewayIP)) == .sent)
        #expect(eventually(3) { receiver.first { Received.isARPReply($0, from: Self.gatewayIP) } != nil })

        // 10.0.2.2 is the host's loopback: a guest SYN becomes a host connection.
        let listener = HostListener()
        var flow = Self.guest
        flow.tcpPorts = FrameBuilder.Ports(40001, listener.port)
        let syn = flow.tcp(seq: 100, ack: 0, flags: [.syn], payload: [], tcpOptions: [2, 4, 0x05, 0xB4], id: 1)
        #expect(backend.send(syn) == .sent)
        #expect(listener.accept(within: 3000), "the host listener saw the NATed connection")
        #expect(eventually(3) {
            receiver.frames.contains { f in
                guard let t = Received.tcpHeader(f.bytes) else { return false }
                return t.dport == 40001 && t.flags.contains([.syn, .ack]) && t.ack == 101
            }
        })
        _ = running
    }

    @Test func hostForwardReachesTheGuest() throws {
        let port = freeLoopbackPort()
        let (backend, receiver, running) = try start(",hostfwd=tcp:127.0.0.1:\(port)-:22")
        defer { backend.stop() }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: port.bigEndian, sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        // libslirp asks for the guest's MAC (answered by the fake guest), then sends the SYN.
        #expect(eventually(5) {
            receiver.frames.contains { f in
                guard let t = Received.tcpHeader(f.bytes) else { return false }
                return t.dport == 22 && t.flags == [.syn] && Array(f.bytes[30 ..< 34]) == Self.guestIP
            }
        })
        _ = running
    }

    /// Connections from the host side to a `hostfwd` port are counted apart from the
    /// guest's own flows and capped: at the cap the listener is not watched, and the rest
    /// wait in the kernel's backlog. Counted with the guest's, they took its budget (its
    /// DNS and DHCP dropped), and past the descriptors the loop spun on a listener whose
    /// accept failed.
    @Test func hostForwardConnectionsAreCappedApartFromTheGuestsFlows() throws {
        let port = freeLoopbackPort()
        let limit = 6
        let (backend, _, running) = try start(",hostfwd=tcp:127.0.0.1:\(port)-:22", forwardedConnectionLimit: limit)
        defer { backend.stop() }
        var clients: [Int32] = []
        defer { clients.forEach { close($0) } }
        func connectOne() {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: port.bigEndian, sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            clients.append(fd)
        }
        // One at a time: libslirp listens with a backlog of 1.
        for i in 1 ... limit {
            connectOne()
            #expect(eventually(3) { backend.hostSocketCounts.forwarded == i })
        }
        for _ in 0 ..< 3 { connectOne() }
        usleep(300_000)
        #expect(backend.hostSocketCounts.forwarded == limit)        // no more accepted
        #expect(backend.hostSocketCounts.guest == 0)                // the guest's budget untouched: its flows go on
        _ = running
    }

    @Test func takenHostPortIsAnErrorNamingTheRule() throws {
        let busy = HostListener()
        let rule = "tcp:127.0.0.1:\(busy.port)-:22"
        do {
            let (backend, _, _) = try start(",hostfwd=\(rule)")
            backend.stop()
            Issue.record("hostfwd on a taken port was accepted")
        } catch {
            #expect("\(error)" == "option 'hostfwd=\(rule)': cannot listen on the host side (port in use or address not local)")
        }
    }

    @Test func oversizedGuestFrameIsDroppedAndCounted() throws {
        let (backend, _, running) = try start(",user-mtu=1500")
        defer { backend.stop() }
        #expect(backend.send([UInt8](repeating: 0, count: 1515)) == .dropped(.oversized))
        #expect(backend.counters.drops(.oversized) == 1)
        backend.stop()
        backend.stop()
        _ = running
    }
}

/// How libslirp hears of its sockets' events (`SlirpPollSet.revents`).
@Suite struct SlirpPollSetTests {
    /// libslirp reads a socket on any of IN, PRI, ERR or HUP and asserts that its buffer
    /// toward the guest has room, which it ensured only where it asked for IN. A socket it
    /// watched for OUT alone (that buffer full) and whose peer reset it got HUP and ERR
    /// anyway, and libslirp 4.7 aborted the process (socket.c `soread`). It gets OUT now.
    @Test func anErrorWhereLibslirpOnlyWritesComesAsOUT() throws {
        let poll = try #require(SlirpPollSet())
        var pair: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]) }
        // libslirp.h: SLIRP_POLL_IN 1, OUT 2, PRI 4, ERR 8, HUP 16.
        let input: Int32 = 1, out: Int32 = 2, err: Int32 = 8, hup: Int32 = 16
        // Fill the socket's send side, so OUT is not ready, then let the peer go.
        _ = fcntl(pair[0], F_SETFL, O_NONBLOCK)
        let chunk = [UInt8](repeating: 1, count: 65_536)
        while chunk.withUnsafeBytes({ write(pair[0], $0.baseAddress, $0.count) }) > 0 {}
        close(pair[1])
        poll.beginFill()
        let writer = poll.add(fd: pair[0], slirpEvents: out)
        poll.endFill()
        poll.collect()
        let r = poll.revents(index: writer)
        #expect(r & (input | hup | err) == 0, "revents \(r)")
        #expect(r & out != 0)
        // Asked to read, it hears of the hang-up as before.
        poll.beginFill()
        let reader = poll.add(fd: pair[0], slirpEvents: input)
        poll.endFill()
        poll.collect()
        #expect(poll.revents(index: reader) & hup != 0)
    }

    /// A listener readable means the next socket libslirp registers is one it accepted:
    /// that one only. Left set after the poll, the guest's own sockets opened later were
    /// counted as forwarded connections and escaped the guest's cap.
    @Test func anAcceptMarksOneRegistrationOnly() throws {
        let poll = try #require(SlirpPollSet())
        let listener = HostListener()
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: listener.port.bigEndian,
                               sin_addr: in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        try #require(connected == 0)
        poll.beginFill()
        let index = poll.add(fd: listener.fd, slirpEvents: 1)   // SLIRP_POLL_IN
        poll.endFill()
        poll.collect()
        #expect(poll.revents(index: index) & 1 != 0)
        #expect(poll.takeAccepting())
        #expect(!poll.takeAccepting())                          // the next registration is the guest's
        _ = poll.revents(index: index)
        poll.endPoll()
        #expect(!poll.takeAccepting())                          // nothing accepted in this poll: cleared
    }
}
