#if canImport(Glibc)
import Glibc
#endif
import NetBackends
import Testing
import VMMCore
import VMMNet
import VMMTestKit

/// A real vde_switch on a socket directory in a temp dir.
final class VDESwitch {
    let directory: String
    var socket: String { directory + "/sw" }
    private(set) var pid: pid_t = 0

    init(directory: String) { self.directory = directory }
    deinit { stop() }

    func start() -> Bool {
        // -d: it daemonizes, so no pipe (the daemon would hold it open); wait for the parent.
        guard let starter = Shell.spawn("vde_switch", ["-d", "-s", socket, "-M", directory + "/mgmt", "-p", directory + "/pid"]),
              Shell.wait(starter) == 0 else { return false }
        guard eventually(3, { readPID() != nil && access(socket + "/ctl", F_OK) == 0 }), let p = readPID() else { return false }
        pid = p
        return true
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        _ = eventually(3) { kill(pid, 0) != 0 }
        kill(pid, SIGKILL)
        pid = 0
        unlink(directory + "/pid")
    }

    private func readPID() -> pid_t? {
        let fd = open(directory + "/pid", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return nil }
        return pid_t(String(decoding: buf[0 ..< n], as: UTF8.self).split(separator: "\n").first ?? "")
    }
}

@Suite(.serialized, .enabled(if: Host.hasVDESwitch, "needs vde_switch (apt-get install vde2)"))
struct VDETests {
    static let macA: [UInt8] = [0x52, 0x54, 0, 0, 0xA, 1], macB: [UInt8] = [0x52, 0x54, 0, 0, 0xB, 2]

    func frame(from src: [UInt8], to dst: [UInt8], _ n: UInt8) -> [UInt8] {
        FrameBuilder(destinationMAC: dst, sourceMAC: src).ethernet(payload: [UInt8](repeating: n, count: 46))
    }

    @Test func twoPortsExchangeFramesAndSurviveASwitchRestart() throws {
        let dir = TemporaryDirectory()
        let sw = VDESwitch(directory: dir.path)
        #expect(sw.start(), "vde_switch did not start")
        let running = try RunningLoop()
        // Both URL forms: a plain switch directory and libvdeplug's vde:// URL.
        let a = try VDEBackend(url: sw.socket, eventLoop: running.loop, clock: running.loop)
        let b = try VDEBackend(url: "vde://" + sw.socket, eventLoop: running.loop, clock: running.loop)
        defer { a.stop(); b.stop() }
        let ra = RecordingReceiver(), rb = RecordingReceiver()
        a.start(receiver: ra)
        b.start(receiver: rb)

        #expect(a.send(frame(from: Self.macA, to: FrameBuilder.broadcast, 1)) == .sent)
        #expect(eventually { rb.frames.count == 1 })
        #expect(b.send(frame(from: Self.macB, to: Self.macA, 2)) == .sent)
        #expect(eventually { ra.frames.count == 1 })
        #expect(ra.frames.first?.bytes == frame(from: Self.macB, to: Self.macA, 2))
        #expect(a.send([UInt8](repeating: 0, count: VDEBackend.maxFrameSize + 1)) == .dropped(.oversized))

        sw.stop()
        #expect(eventually(3) { ra.links == [false] && rb.links == [false] })
        #expect(a.send(frame(from: Self.macA, to: FrameBuilder.broadcast, 3)) == .dropped(.linkDown))

        #expect(sw.start(), "vde_switch did not restart")
        #expect(eventually(5) { ra.links == [false, true] && rb.links == [false, true] })
        #expect(a.send(frame(from: Self.macA, to: FrameBuilder.broadcast, 4)) == .sent)
        #expect(eventually { rb.frames.count == 2 })
        #expect(rb.frames.last?.bytes == frame(from: Self.macA, to: FrameBuilder.broadcast, 4))
    }

    /// A switch that writes on the control socket after the handshake (none does): the
    /// byte is read and dropped, the link stays up. It was only peeked at, so the socket
    /// stayed readable and the I/O loop spun at full CPU; the peer sees it unread.
    @Test(.enabled(if: Host.has("python3"), "needs python3 for the chatty switch"))
    func aByteOnTheControlSocketIsReadNotPeekedForEver() throws {
        let dir = TemporaryDirectory()
        let script = String(#filePath.dropLast("VDETests.swift".count)) + "Peers/chatty-vde-switch.py"
        let peer = try #require(Shell.spawn("python3", [script, dir.path]))
        defer { Shell.kill(peer) }
        #expect(eventually(5) { access(dir.path + "/ready", F_OK) == 0 })
        let running = try RunningLoop()
        let backend = try VDEBackend(url: dir.path, eventLoop: running.loop, clock: running.loop)
        defer { backend.stop() }
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        #expect(eventually(5) { access(dir.path + "/result", F_OK) == 0 })
        let fd = open(dir.path + "/result", O_RDONLY)
        var buf = [UInt8](repeating: 0, count: 16)
        let n = fd >= 0 ? read(fd, &buf, buf.count) : -1
        if fd >= 0 { close(fd) }
        #expect(n > 0 && String(decoding: buf[0 ..< max(n, 0)], as: UTF8.self) == "0", "bytes left unread on the control socket")
        #expect(receiver.links.isEmpty)   // no link change: the switch is still there
    }

    /// A "switch" whose control socket accepts connections (the kernel's backlog does)
    /// and never answers: libvdeplug's handshake waited in recv for ever, and `run` hung
    /// where SIGTERM could not end it. It now gives up after the handshake timeout,
    /// leaving no data socket in the directory.
    @Test func aSwitchThatNeverAnswersIsGivenUpOn() throws {
        let dir = TemporaryDirectory()
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = dir.path + "/ctl"
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)
        let running = try RunningLoop()
        let start = MonotonicTime.nanoseconds()
        #expect(throws: NetBackendError.self) {
            _ = try VDEBackend(url: dir.path, eventLoop: running.loop, clock: running.loop, handshakeTimeoutMilliseconds: 300)
        }
        #expect(MonotonicTime.nanoseconds() - start < 3_000_000_000)
        var left: [String] = []
        if let d = opendir(dir.path) {
            while let entry = readdir(d) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { left.append(name) }
            }
            closedir(d)
        }
        #expect(left == ["ctl"], "left behind: \(left)")
    }

    /// libvdeplug's `seqpacket://FD` plugin on one end of a socketpair. A seqpacket peer
    /// that closes reads as 0 bytes, like an empty datagram; the backend took it for one
    /// (every socket is S_IFSOCK) and counted 64 "empty frames" per loop turn for ever,
    /// with the link up. Now the socket's type decides: link down, once.
    @Test func aSeqpacketPeerThatClosesTakesTheLinkDown() throws {
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &fds) == 0)
        let running = try RunningLoop()
        let backend = try VDEBackend(url: "seqpacket://\(fds[0])", eventLoop: running.loop, clock: running.loop)   // owns fds[0]
        defer { backend.stop() }
        let receiver = RecordingReceiver()
        backend.start(receiver: receiver)
        let f = frame(from: Self.macB, to: Self.macA, 7)
        #expect(send(fds[1], f, f.count, 0) == f.count)
        #expect(eventually { receiver.frames.first?.bytes == f })
        close(fds[1])
        #expect(eventually(3) { receiver.links == [false] })
        usleep(200_000)
        #expect(backend.counters.drops(.malformed) == 0)
        #expect(receiver.links == [false])
    }

    @Test func missingSwitchIsAClearError() throws {
        let running = try RunningLoop()
        do {
            _ = try VDEBackend(url: "/nonexistent/switch", eventLoop: running.loop, clock: running.loop)
            Issue.record("connected to nothing")
        } catch {
            #expect("\(error)".hasPrefix("option 'net=vde:/nonexistent/switch': vde_open failed"))
        }
    }

    /// The plugin is found as libvdeplug's `vde_open_real` finds it: a plain path that is a
    /// regular file stands for the URL on its first line, and the plugin is what precedes
    /// the first "://". A file naming `hub://` passed as a "plain path" before.
    @Test func theSandboxCheckSeesThePluginLibvdeplugWillLoad() throws {
        let temporary = TemporaryDirectory()
        let dir = temporary.path
        let file = dir + "/sw.url"
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        #expect(write(fd, "hub:///tmp/x\nsecond line\n", 26) == 26)
        close(fd)
        #expect(VDEBackend.sandboxUnsafePlugin(file) == "hub")
        #expect(VDEBackend.sandboxUnsafePlugin(dir) == nil)             // a switch directory
        #expect(VDEBackend.sandboxUnsafePlugin(dir + "/none") == nil)   // nothing there: the vde plugin
        #expect(VDEBackend.sandboxUnsafePlugin("vxvde://239.1.2.3") == nil)
        #expect(VDEBackend.sandboxUnsafePlugin("cmd://true") == "cmd")
        #expect(VDEBackend.sandboxUnsafePlugin("x/y://z") == "x/y")
        #expect(VDEBackend.sandboxUnsafePlugin("VDE:///tmp/sw") == "VDE")  // libvdeplug_VDE.so: not ours
    }
}
