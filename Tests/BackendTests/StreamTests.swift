#if canImport(Glibc)
import Glibc
#endif
@testable import NetBackends
import Testing
import VMMCore
import VMMNet
import VMMTestKit

/// The peer side of a stream wire, driven by the test: 4-byte big-endian lengths.
final class StreamPeer {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    func send(_ frame: [UInt8]) {
        let bytes = [UInt8](be32: UInt32(frame.count)) + frame
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    func sendRaw(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }

    /// Reads one frame (waits up to 5 s).
    func receive() -> [UInt8]? {
        guard let header = readExactly(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        return readExactly(length)
    }

    private func readExactly(_ n: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: max(n, 1))
        while out.count < n {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 5000) == 1 else { return nil }
            let r = read(fd, &buf, n - out.count)
            if r <= 0 { return nil }
            out += buf[0 ..< r]
        }
        return out
    }

    static func listen(unix path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        Glibc.listen(fd, 4)
        return fd
    }

    static func accept(_ listener: Int32) -> StreamPeer? {
        var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 5000) == 1 else { return nil }
        let fd = Glibc.accept(listener, nil, nil)
        return fd >= 0 ? StreamPeer(fd: fd) : nil
    }

    static func connect(unix path: String) -> StreamPeer? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { close(fd); return nil }
        return StreamPeer(fd: fd)
    }
}

/// Frame number `n` of `length` bytes, broadcast: a payload of n's low byte, repeated.
func testFrame(_ n: Int, length: Int = 60) -> [UInt8] {
    FrameBuilder(destinationMAC: FrameBuilder.broadcast, sourceMAC: [0x52, 0x54, 0, 0, 0, 1])
        .ethernet(payload: [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: max(length - 14, 0)))
}

/// A stream backend connected as a client to a Unix socket the test listens on; the
/// listener closes and the backend stops when this goes.
final class UnixWire {
    let dir = TemporaryDirectory()
    let listener: Int32
    let running: RunningLoop
    let backend: StreamBackend

    init() throws {
        let path = dir.path + "/wire"
        listener = StreamPeer.listen(unix: path)
        running = try RunningLoop()
        do {
            backend = try StreamBackend(config: StreamConfig(address: .unix(path: path)), eventLoop: running.loop, clock: running.loop)
        } catch {
            close(listener)
            throw error
        }
    }

    deinit {
        backend.stop()
        close(listener)
    }
}

@Suite(.serialized) struct StreamTests {
    @Test func clientExchangesFramesBothWays() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        let peer = try #require(StreamPeer.accept(wire.listener))
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        #expect(backend.isLinkUp)

        // Guest → wire, from a scatter list: one length-prefixed record.
        let frame = testFrame(1, length: 100)
        let result = frame.withUnsafeBytes { b in
            backend.send([UnsafeRawBufferPointer(rebasing: b[0 ..< 10]), UnsafeRawBufferPointer(rebasing: b[10...])], header: nil)
        }
        #expect(result == .sent)
        #expect(peer.receive() == frame)

        // Wire → guest, including two records in one write and one split across writes.
        peer.send(testFrame(2))
        let three = testFrame(3), four = testFrame(4, length: 1514)
        let bytes = [UInt8](be32: UInt32(three.count)) + three + [UInt8](be32: UInt32(four.count)) + four
        peer.sendRaw(Array(bytes[0 ..< 70]))
        usleep(20_000)
        peer.sendRaw(Array(bytes[70...]))
        #expect(eventually { receiver.frames.count == 3 })
        #expect(receiver.frames.map(\.bytes) == [testFrame(2), three, four])
        #expect(backend.counters.rxFrames.load(ordering: .relaxed) == 3)
        #expect(backend.counters.txFrames.load(ordering: .relaxed) == 1)
    }

    @Test func oversizedAndEmptyRecordsAreSkippedAndCounted() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        let peer = try #require(StreamPeer.accept(wire.listener))
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        peer.sendRaw([UInt8](be32: 70_000) + [UInt8](repeating: 0xAB, count: 70_000))
        peer.sendRaw([UInt8](be32: 0))
        peer.sendRaw([UInt8](be32: 13) + [UInt8](repeating: 0xCD, count: 13))   // less than an Ethernet header
        peer.send(testFrame(9))
        #expect(eventually { receiver.frames.count == 1 })
        #expect(receiver.frames.first?.bytes == testFrame(9))
        #expect(backend.counters.drops(.oversized) == 1)
        #expect(backend.counters.drops(.malformed) == 2)
        // And the guest side: a frame over 64 KiB is refused and counted, never asserted.
        #expect(backend.send([UInt8](repeating: 0, count: 70_000)) == .dropped(.oversized))
    }

    /// 100,000 empty records in a row (4 bytes each), then a frame: a readiness event
    /// handles 256 of them at most and the rest continues in later turns of the loop
    /// (what is buffered raises no readiness of its own); all are counted, in tallies,
    /// and the frame arrives.
    @Test func aFloodOfEmptyRecordsIsWorkedOffInBoundedTurns() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        let peer = try #require(StreamPeer.accept(wire.listener))
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        peer.sendRaw([UInt8](repeating: 0, count: 400_000))
        peer.send(testFrame(7))
        #expect(eventually(10) { receiver.frames.count == 1 })
        #expect(receiver.frames.first?.bytes == testFrame(7))
        #expect(backend.counters.drops(.malformed) == 100_000)
    }

    @Test func backPressureKeepsTheFrameUntilResumed() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        let peer = try #require(StreamPeer.accept(wire.listener))
        let receiver = RecordingReceiver()
        receiver.setAccepting(false)
        backend.start(receiver: receiver)
        for i in 0 ..< 5 { peer.send(testFrame(i)) }
        #expect(eventually { receiver.refusals >= 1 })
        usleep(50_000)
        // Stopped reading: one refusal, no busy retry.
        #expect(receiver.refusals == 1)
        receiver.setAccepting(true)
        backend.resumeReceive()
        #expect(eventually { receiver.frames.count == 5 })
        #expect(receiver.frames.map(\.bytes) == (0 ..< 5).map { testFrame($0) })
    }

    /// The peer hangs up while a frame waits for the device: nothing is offered in its
    /// place (order kept, no busy loop on the unmaskable hang-up), the link goes down, and
    /// the held frame still reaches the device when it takes frames again.
    @Test func peerHangingUpWhileAFrameIsHeld() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        var peer = StreamPeer.accept(wire.listener)
        let receiver = RecordingReceiver()
        receiver.setAccepting(false)
        backend.start(receiver: receiver)
        for i in 0 ..< 3 { peer?.send(testFrame(i)) }
        #expect(eventually { receiver.refusals >= 1 })
        peer = nil   // closes
        #expect(eventually { receiver.links == [false] })
        usleep(50_000)
        #expect(receiver.refusals == 1)
        receiver.setAccepting(true)
        backend.resumeReceive()
        #expect(eventually { receiver.frames.count == 1 })
        #expect(receiver.frames.first?.bytes == testFrame(0))
        _ = peer
    }

    @Test func clientReconnectsAfterThePeerGoes() throws {
        let wire = try UnixWire()
        let backend = wire.backend
        var peer = StreamPeer.accept(wire.listener)
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        peer = nil   // closes
        #expect(eventually { receiver.links == [false] })
        #expect(!backend.isLinkUp)
        #expect(backend.send(testFrame(1)) == .dropped(.linkDown))
        let again = try #require(StreamPeer.accept(wire.listener))
        #expect(eventually { receiver.links == [false, true] })
        again.send(testFrame(7))
        #expect(eventually { receiver.frames.count == 1 })
        #expect(backend.send(testFrame(8)) == .sent)
        #expect(again.receive() == testFrame(8))
        _ = peer
    }

    @Test func serverModeTakesOnePeerAtATime() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/listen"
        let running = try RunningLoop()
        let backend = try StreamBackend(config: StreamConfig(address: .unix(path: path), listen: true), eventLoop: running.loop, clock: running.loop)
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        #expect(!backend.isLinkUp)
        var client = StreamPeer.connect(unix: path)
        #expect(client != nil)
        #expect(eventually { backend.isLinkUp })
        client?.send(testFrame(1))
        #expect(eventually { receiver.frames.count == 1 })
        #expect(backend.send(testFrame(2)) == .sent)
        #expect(client?.receive() == testFrame(2))
        client = nil
        #expect(eventually { !backend.isLinkUp })
        let second = try #require(StreamPeer.connect(unix: path))
        #expect(eventually { backend.isLinkUp })
        second.send(testFrame(3))
        #expect(eventually { receiver.frames.count == 2 })
        backend.stop()
        backend.stop()
        #expect(access(path, F_OK) != 0, "stop() removes the socket file")
    }

    /// A name with several addresses (localhost: ::1, then 127.0.0.1) is tried at each,
    /// at start and on every reconnect, as QEMU's `inet_connect_saddr` does; before, the
    /// first address was the only one, so a peer on 127.0.0.1 never answered "localhost".
    @Test func aClientTriesEachAddressOfTheNameInTurn() throws {
        // Port b is bound but not listening (connects are refused); port a listens.
        let b = try #require(TCPTestSocket(listening: false)), a = try #require(TCPTestSocket(listening: true))
        let addresses = try SocketAddress.resolve(host: "127.0.0.1", port: b.port, passive: false)
            + SocketAddress.resolve(host: "127.0.0.1", port: a.port, passive: false)
        let running = try RunningLoop()
        let backend = try StreamBackend(config: StreamConfig(address: .tcp(host: "localhost", port: b.port)),
                                        addresses: addresses, eventLoop: running.loop, clock: running.loop)
        defer { backend.stop() }
        var peer = StreamPeer.accept(a.fd)
        #expect(peer != nil, "the second address answered at start")
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        // Now a refuses and b listens: the reconnect tries a, then b.
        a.close()
        peer = nil
        #expect(eventually { receiver.links == [false] })
        b.listen()
        let again = try #require(StreamPeer.accept(b.fd))
        #expect(eventually { receiver.links == [false, true] })
        #expect(backend.send(testFrame(5)) == .sent)
        #expect(again.receive() == testFrame(5))
        _ = peer
    }

    /// `stream-fd:` takes a connected socket: a listening one has no peer (it was
    /// accepted, and its reads failed with ENOTCONN), so it is refused with the reason.
    @Test func aHandedOverListeningSocketIsRefused() throws {
        let listener = try #require(TCPTestSocket(listening: true))
        let running = try RunningLoop()
        // Numbered from 1000 up: tests running beside this one open descriptors lowest-first,
        // so none of theirs takes this number once it is closed, and the check below means
        // what it says (a plain dup's low number was reused by another test once).
        let fd = fcntl(listener.fd, F_DUPFD_CLOEXEC, 1000)
        try #require(fd >= 1000)
        #expect {
            _ = try StreamBackend(adopting: fd, label: "9", eventLoop: running.loop, clock: running.loop)
        } throws: { "\($0)".contains("is a listening socket") }
        #expect(fcntl(fd, F_GETFD) == -1, "the refused descriptor is closed")
    }

    @Test func tcpClientAndServer() throws {
        let running = try RunningLoop()
        // A swiftvmm-to-swiftvmm wire: one backend listens, the other connects.
        let server = try StreamBackend(config: StreamConfig(address: .tcp(host: "127.0.0.1", port: 0), listen: true),
                                       eventLoop: running.loop, clock: running.loop)
        defer { server.stop() }
        let port = try #require(server.boundPort)
        let client = try StreamBackend(config: StreamConfig(address: .tcp(host: "127.0.0.1", port: port)), eventLoop: running.loop, clock: running.loop)
        defer { client.stop() }
        let a = RecordingReceiver(), b = RecordingReceiver()
        server.start(receiver: a)
        client.start(receiver: b)
        #expect(eventually { server.isLinkUp })
        #expect(client.send(testFrame(1)) == .sent)
        #expect(server.send(testFrame(2)) == .sent)
        #expect(eventually { a.frames.count == 1 && b.frames.count == 1 })
        #expect(a.frames.first?.bytes == testFrame(1) && b.frames.first?.bytes == testFrame(2))
    }

    @Test(.enabled(if: Host.hasQEMU, "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"))
    func interoperatesWithQEMUNetdevStream() throws {
        // QEMU relays between two -netdev stream peers through a hub: frames our first
        // backend sends come out of QEMU into the second one, framed by QEMU itself.
        // (Not -S: a stopped VM's net layer sends nothing.)
        let dir = TemporaryDirectory()
        let running = try RunningLoop()
        let a = try StreamBackend(config: StreamConfig(address: .unix(path: dir.path + "/a"), listen: true), eventLoop: running.loop, clock: running.loop)
        let b = try StreamBackend(config: StreamConfig(address: .unix(path: dir.path + "/b"), listen: true), eventLoop: running.loop, clock: running.loop)
        defer { a.stop(); b.stop() }
        let ra = RecordingReceiver(), rb = RecordingReceiver()
        a.start(receiver: ra)
        b.start(receiver: rb)
        let qemu = try #require(Shell.spawn("qemu-system-x86_64", [
            "-machine", "none", "-nodefaults", "-display", "none",
            "-netdev", "stream,id=n1,server=off,addr.type=unix,addr.path=\(dir.path)/a",
            "-netdev", "stream,id=n2,server=off,addr.type=unix,addr.path=\(dir.path)/b",
            "-netdev", "hubport,id=h1,hubid=0,netdev=n1",
            "-netdev", "hubport,id=h2,hubid=0,netdev=n2",
        ]))
        defer { Shell.kill(qemu) }
        #expect(eventually(10) { a.isLinkUp && b.isLinkUp })
        // Our side sees the link up when it accepts, but QEMU wires its second stream
        // into the hub only when its own connect completes in its main loop; until then
        // the hub drops what it relays. Probe until one frame gets through.
        #expect(eventually(10) { _ = a.send(testFrame(1)); return !rb.frames.isEmpty })
        let big = testFrame(5, length: 1514)
        #expect(a.send(big) == .sent)
        #expect(eventually(5) { rb.frames.last?.bytes == big })
        #expect(rb.frames.dropLast().allSatisfy { $0.bytes == testFrame(1) }, "QEMU relayed other bytes")
        #expect(b.send(testFrame(2)) == .sent)
        #expect(eventually(5) { ra.frames.count == 1 })
        #expect(ra.frames.first?.bytes == testFrame(2))
    }
}

/// A TCP socket on 127.0.0.1 with a port of its own: bound only (connects to it are
/// refused) or listening.
final class TCPTestSocket {
    private(set) var fd: Int32
    let port: UInt16

    init?(listening: Bool) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(INADDR_LOOPBACK).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard fd >= 0, bound else { Glibc.close(fd); return nil }
        self.fd = fd
        port = UInt16(bigEndian: addr.sin_port)
        if listening { listen() }
    }

    func listen() { Glibc.listen(fd, 4) }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}
