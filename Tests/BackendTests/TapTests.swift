#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import NetBackends
import Testing
import VMMCore
import VMMNet
import VMMTestKit

/// A network namespace for one test, deleted (with the TAP moved into it) at the end.
final class NetworkNamespace {
    let name: String
    init(_ name: String) {
        self.name = name
        Shell.run("ip", ["netns", "del", name])
        Shell.run("ip", ["netns", "add", name])
    }
    deinit { Shell.run("ip", ["netns", "del", name]) }

    @discardableResult
    func ip(_ args: [String]) -> Shell.Result { Shell.run("ip", ["-n", name] + args) }
    func exec(_ args: [String]) -> Shell.Result { Shell.run("ip", ["netns", "exec", name] + args) }
}

@Suite(.serialized, .enabled(if: Host.canUseTapAndNetns, "needs root, /dev/net/tun and iproute2 (ip netns)"))
struct TapTests {
    static let guestMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAA, 0x00, 0x02]
    static let guestIP: [UInt8] = [10, 77, 0, 2], hostIP: [UInt8] = [10, 77, 0, 1]
    /// The fake guest's frames to the namespace's kernel (whose MAC comes from ARP); TCP to the discard port.
    static let guest = FrameBuilder(sourceMAC: guestMAC, sourceIPv4: guestIP, destinationIPv4: hostIP, tcpPorts: FrameBuilder.Ports(40000, 9))

    /// A TAP created by the backend, moved into a fresh namespace and addressed there.
    func setUp(_ tag: String) throws -> (NetworkNamespace, TapBackend, RecordingReceiver, RunningLoop) {
        let ns = NetworkNamespace("svmm-\(tag)-\(getpid())")
        let running = try RunningLoop()
        let name = "svt\(tag)\(getpid() % 100_000)"
        let backend = try TapBackend(interface: name, eventLoop: running.loop)
        #expect(backend.createdInterface)
        #expect(Shell.run("ip", ["link", "set", name, "netns", ns.name]).status == 0)
        ns.ip(["addr", "add", "10.77.0.1/24", "dev", name])
        ns.ip(["link", "set", name, "up"])
        // The fake guest answers the kernel's ARP for its address.
        let receiver = RecordingReceiver { [weak backend] frame in
            if Received.isARPRequest(frame, for: TapTests.guestIP), frame.count >= 28 {
                backend?.send(FrameBuilder(destinationMAC: Array(frame[22 ..< 28]), sourceMAC: TapTests.guestMAC, sourceIPv4: TapTests.guestIP,
                                           destinationIPv4: Array(frame[28 ..< 32])).arpReply())
            }
        }
        backend.start(receiver: receiver)
        return (ns, backend, receiver, running)
    }

    @Test func arpAndPingAnsweredByTheNamespaceKernel() throws {
        let (ns, backend, receiver, running) = try setUp("a")
        defer { backend.stop() }
        #expect(backend.send(Self.guest.arpRequest(for: TapTests.hostIP)) == .sent)
        #expect(eventually(3) { receiver.first { Received.isARPReply($0, from: TapTests.hostIP) } != nil })
        let hostMAC = try #require(receiver.first { Received.isARPReply($0, from: TapTests.hostIP) }).prefix(12).suffix(6)
        let echo = Self.guest.addressed(to: Array(hostMAC))
            .ipv4(proto: 1, id: 1, payload: FrameBuilder.icmpEchoRequest(id: 0x4242, seq: 1, data: Array(repeating: 7, count: 56)))
        #expect(backend.send(echo) == .sent)
        #expect(eventually(3) { receiver.first { Received.isICMPEchoReply($0, id: 0x4242) } != nil })
        // Every frame came with a virtio-net header (IFF_VNET_HDR).
        #expect(receiver.frames.allSatisfy { $0.header != nil })
        #expect(backend.counters.txFrames.load(ordering: .relaxed) >= 2)
        #expect(backend.counters.rxFrames.load(ordering: .relaxed) >= 2)
        _ = (ns, running)
    }

    @Test func receiveOffloadsReachTheKernelAndTSOFramesAreAccepted() throws {
        let (ns, backend, receiver, running) = try setUp("o")
        defer { backend.stop() }
        let name = backend.interfaceName
        func offload(_ feature: String) -> Bool {
            ns.exec(["ethtool", "-k", name]).output.split(separator: "\n").contains { $0.hasPrefix("\(feature): on") }
        }
        if Host.hasEthtool {
            #expect(!offload("tcp-segmentation-offload"))
            backend.setReceiveOffloads([.checksum, .tso4, .tso6])
            #expect(offload("tcp-segmentation-offload"))
            #expect(offload("tx-checksumming"))
            backend.setReceiveOffloads([])
            #expect(!offload("tcp-segmentation-offload"))
        }
        // A 3000-byte TCP segment with a TSO header (gso 1000, partial checksum) to a closed
        // port: the kernel takes the whole GSO frame and resets it, acknowledging all 3000 bytes.
        #expect(backend.send(Self.guest.arpRequest(for: TapTests.hostIP)) == .sent)
        #expect(eventually(3) { receiver.first { Received.isARPReply($0, from: TapTests.hostIP) } != nil })
        let hostMAC = Array(try #require(receiver.first { Received.isARPReply($0, from: TapTests.hostIP) })[6 ..< 12])
        let payload = (0 ..< 3000).map { UInt8(truncatingIfNeeded: $0) }
        let frame = Self.guest.addressed(to: hostMAC).tcp(seq: 1000, ack: 0, flags: [.psh], payload: payload, id: 1, checksum: .partial)
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue,
                                     headerLength: 54, gsoSize: 1000, checksumStart: 34, checksumOffset: 16)
        #expect(backend.send(frame, header: header) == .sent)
        #expect(eventually(3) {
            receiver.frames.contains { f in
                guard let t = Received.tcpHeader(f.bytes) else { return false }
                return t.dport == 40000 && t.flags.contains(.rst) && t.ack == 1000 + 3000
            }
        })
        // The same send in three pieces, as the e1000 hands one over (its rewritten
        // headers, then payload from guest memory): the backend copies the pieces that fit
        // next to the virtio-net header and passes the last one as a second iovec.
        let split = Self.guest.addressed(to: hostMAC).tcp(seq: 5000, ack: 0, flags: [.psh], payload: payload, id: 2, checksum: .partial)
        let sent = split.withUnsafeBytes { all in
            backend.send([UnsafeRawBufferPointer(rebasing: all[0 ..< 54]), UnsafeRawBufferPointer(rebasing: all[54 ..< 1054]),
                          UnsafeRawBufferPointer(rebasing: all[1054...])], header: header)
        }
        #expect(sent == .sent)
        #expect(eventually(3) {
            receiver.frames.contains { f in
                guard let t = Received.tcpHeader(f.bytes) else { return false }
                return t.dport == 40000 && t.flags.contains(.rst) && t.ack == 5000 + 3000
            }
        })
        _ = running
    }

    @Test func deletedInterfaceTakesTheLinkDown() throws {
        let (ns, backend, receiver, running) = try setUp("d")
        defer { backend.stop() }
        #expect(ns.ip(["link", "del", backend.interfaceName]).status == 0)
        #expect(eventually(3) { receiver.links == [false] })
        #expect(!backend.isLinkUp)
        #expect(backend.send(testFrame(1)) == .dropped(.linkDown))
        backend.stop()
        backend.stop()
        _ = running
    }

    /// Frames read in one readiness event that the device refuses stay where they were read
    /// and reach it, in order and each once, when it takes frames again; reading resumes
    /// after them.
    @Test func refusedFramesArriveInOrderOnResume() throws {
        let (ns, backend, receiver, running) = try setUp("r")
        defer { backend.stop() }
        ns.ip(["neigh", "replace", "10.77.0.2", "lladdr", "52:54:00:aa:00:02", "dev", backend.interfaceName, "nud", "permanent"])
        receiver.setAccepting(false)
        _ = ns.exec(["bash", "-c", "for i in 1 2 3 4 5 6 7 8; do echo datagram-$i > /dev/udp/10.77.0.2/9; done"])
        #expect(eventually(3) { receiver.refusals >= 1 })
        usleep(100_000)
        receiver.setAccepting(true)
        backend.resumeReceive()
        func datagrams() -> [String] {
            receiver.frames.compactMap { f in
                guard let text = String(bytes: f.bytes.suffix(from: min(42, f.bytes.count)), encoding: .utf8), text.hasPrefix("datagram-") else { return nil }
                return text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        #expect(eventually(3) { datagrams().count == 8 })
        #expect(datagrams() == (1 ... 8).map { "datagram-\($0)" })
        _ = running
    }

    /// Frames held for the device when the backend stops are counted lost, not dropped
    /// silently.
    @Test func framesHeldAtStopAreCountedLost() throws {
        let (ns, backend, receiver, running) = try setUp("l")
        ns.ip(["neigh", "replace", "10.77.0.2", "lladdr", "52:54:00:aa:00:02", "dev", backend.interfaceName, "nud", "permanent"])
        receiver.setAccepting(false)
        _ = ns.exec(["bash", "-c", "for i in 1 2 3; do echo x > /dev/udp/10.77.0.2/9; done"])
        #expect(eventually(3) { receiver.refusals >= 1 })
        backend.stop()
        #expect(eventually(3) { backend.counters.drops(.linkDown) >= 1 })
        _ = running
    }

    /// A frame held for a receiver that takes nothing (a guest whose receiver is off) pauses
    /// reading. Deleting the interface then must not make the loop offer the frame again
    /// and again; the link goes down once the receiver takes frames again.
    @Test func deletedInterfaceWhileAFrameIsHeld() throws {
        let (ns, backend, receiver, running) = try setUp("h")
        defer { backend.stop() }
        receiver.setAccepting(false)
        // A datagram to the guest's address: the namespace's kernel sends an ARP request.
        _ = ns.exec(["bash", "-c", "echo x > /dev/udp/10.77.0.2/9"])
        #expect(eventually(3) { receiver.refusals >= 1 })
        let refusals = receiver.refusals
        #expect(ns.ip(["link", "del", backend.interfaceName]).status == 0)
        usleep(300_000)
        #expect(receiver.refusals == refusals)          // still paused: nothing offered again
        receiver.setAccepting(true)
        backend.resumeReceive()
        #expect(eventually(3) { receiver.links == [false] })
        #expect(!receiver.frames.isEmpty)              // the held frame, then the deletion
        #expect(backend.send(testFrame(1)) == .dropped(.linkDown))
        _ = running
    }

    /// `stop` from another thread (a device shut down while the loop runs, as `serve`
    /// does) while a delivery of read frames waits in the device: the loop reads no
    /// further, even from a descriptor that took the closed TAP's number meanwhile.
    @Test func stoppedDuringADeliveryReadsNoMore() throws {
        let ns = NetworkNamespace("svmm-s-\(getpid())")
        let running = try RunningLoop()
        let name = "svts\(getpid() % 100_000)"
        let before = Set(Self.tunDescriptors())
        let backend = try TapBackend(interface: name, eventLoop: running.loop)
        let tapFD = try #require(Set(Self.tunDescriptors()).subtracting(before).first)
        #expect(Shell.run("ip", ["link", "set", name, "netns", ns.name]).status == 0)
        ns.ip(["addr", "add", "10.77.0.1/24", "dev", name])
        ns.ip(["link", "set", name, "up"])
        ns.ip(["neigh", "replace", "10.77.0.2", "lladdr", "52:54:00:aa:00:02", "dev", name, "nud", "permanent"])
        let receiver = GatedReceiver()
        backend.start(receiver: receiver)
        // Three datagrams queue three frames; their delivery holds the loop in the device.
        _ = ns.exec(["bash", "-c", "for i in 1 2 3; do echo x > /dev/udp/10.77.0.2/9; done"])
        #expect(receiver.entered.wait(timeout: 3))
        // The pipe is made while the TAP is open: made after `stop`, it could take the
        // TAP's number itself, and `dup2` then closed its write end (a rare failure).
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        #expect(fcntl(pipeFDs[0], F_SETFL, O_NONBLOCK) == 0)
        backend.stop()
        // The TAP's number now names a non-blocking pipe holding five bytes.
        #expect(dup2(pipeFDs[0], tapFD) == tapFD)
        #expect(write(pipeFDs[1], "hello", 5) == 5)
        receiver.gate.signal()
        #expect(receiver.returned.wait(timeout: 3))
        usleep(100_000)
        var left = [UInt8](repeating: 0, count: 16)
        #expect(read(tapFD, &left, left.count) == 5, "the loop read from the descriptor after stop")
        for fd in [tapFD, pipeFDs[0], pipeFDs[1]] { close(fd) }
        _ = running
    }

    /// Descriptors of this process open on /dev/net/tun.
    static func tunDescriptors() -> [Int32] {
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        var found: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = Int32(name) else { continue }
            var target = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
            if n > 0, String(decoding: target[0 ..< n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "/dev/net/tun" { found.append(fd) }
        }
        return found
    }

    @Test func createdInterfaceIsRemovedOnStop() throws {
        let running = try RunningLoop()
        let name = "svtr\(getpid() % 100_000)"
        let backend = try TapBackend(interface: name, eventLoop: running.loop)
        #expect(if_nametoindex(name) != 0)
        backend.stop()
        #expect(eventually(2) { if_nametoindex(name) == 0 })
    }

    @Test func attachesToAPersistentTapAndLeavesIt() throws {
        let running = try RunningLoop()
        let name = "svtp\(getpid() % 100_000)"
        #expect(Shell.run("ip", ["tuntap", "add", name, "mode", "tap", "vnet_hdr"]).status == 0)
        defer { Shell.run("ip", ["tuntap", "del", name, "mode", "tap"]) }
        let backend = try TapBackend(interface: name, eventLoop: running.loop)
        #expect(!backend.createdInterface)
        backend.stop()
        #expect(if_nametoindex(name) != 0)
    }

    @Test func notATapIsAClearError() throws {
        let running = try RunningLoop()
        #expect(throws: NetBackendError.self) { try TapBackend(interface: "lo", eventLoop: running.loop) }
        do { _ = try TapBackend(interface: "lo", eventLoop: running.loop) } catch {
            #expect("\(error)".hasPrefix("option 'net=tap:lo': TUNSETIFF failed"))
        }
    }
}

/// A receiver whose first delivery waits at a gate: it holds the loop inside it.
private final class GatedReceiver: FrameReceiver, @unchecked Sendable {
    let entered = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), returned = DispatchSemaphore(value: 0)
    private var first = true
    func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        guard first else { return frames.count }
        first = false
        entered.signal()
        gate.wait()
        returned.signal()
        return frames.count
    }
    func linkStateChanged(up _: Bool) {}
}

private extension DispatchSemaphore {
    func wait(timeout seconds: Double) -> Bool { wait(timeout: .now() + seconds) == .success }
}
