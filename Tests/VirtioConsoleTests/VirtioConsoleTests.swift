#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioConsole

/// What Linux's virtio_console does to a console without MULTIPORT
/// (drivers/char/virtio_console.c): `fill_queue` posts page-sized device-writable buffers
/// on receiveq0 and kicks; `put_chars` sends one device-readable buffer on transmitq0 and
/// spins until it comes back.
final class VirtioConsoleDriver: VirtioTestDriver {
    let console: TestDevice
    var device: VirtioConsole? { (console.function.device as? VirtioConsoleDevice)?.device }
    override var defaultQueueCount: Int { 2 }

    init(options: String = "") throws {
        let m = try TestMachine()
        console = try m.add(VirtioConsoleDevice.self, options: options)
        super.init(function: console, machine: m)
    }

    /// The guest writes `text` to hvc0.
    func send(_ text: String, kick: Bool = true) {
        let bytes = Array(text.utf8)
        queues[VirtioConsole.transmitQueue]?.addChain([(buffer(bytes), UInt32(bytes.count), false)])
        if kick { self.kick(VirtioConsole.transmitQueue) }
    }

    /// Posts `count` input buffers of `size` bytes; returns their addresses.
    @discardableResult
    func postInput(_ count: Int, size: Int = 64) -> [GuestAddress] {
        let buffers = (0 ..< count).map { _ in buffer(zeroed: size) }
        for b in buffers { queues[VirtioConsole.receiveQueue]?.addChain([(b, UInt32(size), true)]) }
        kick(VirtioConsole.receiveQueue)
        return buffers
    }
}

/// A client of a `socket:` console, as `socat - UNIX-CONNECT:PATH` would be.
final class ConsoleClient {
    let fd: Int32
    init?(path: String) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard fd >= 0, bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(fd); return nil }
    }
    deinit { close(fd) }

    func send(_ text: String) { _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    /// What arrives within `seconds` (until `count` bytes or the peer closes).
    func receive(_ count: Int, seconds: Double = 5) -> [UInt8] {
        var out: [UInt8] = []
        let deadline = MonotonicTime.nanoseconds() + UInt64(seconds * 1e9)
        while out.count < count, MonotonicTime.nanoseconds() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            out += buffer[0 ..< n]
        }
        return out
    }
}

private func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = MonotonicTime.nanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if MonotonicTime.nanoseconds() > deadline { return false }
        usleep(2_000)
    }
    return true
}

private func temporaryPath(_ name: String) -> String { "/tmp/swiftvmm-console-\(getpid())-\(name)" }

@Suite("virtio-console") struct VirtioConsoleTests {
    typealias D = VirtioConsoleDriver

    /// virtio_pci_modern_probe and virtcons_probe: the modern ID 0x1040 + 3,
    /// PCI_CLASS_COMMUNICATION_OTHER (QEMU's virtio_serial_pci_class_init), no device
    /// feature bits (so no MULTIPORT: one port, hvc0) and port 0's two queues.
    @Test func identityAndFeatures() throws {
        let d = try D()
        #expect(d.console.configRead(0x00) == 0x1043_1AF4)
        #expect(d.console.configRead(0x08) >> 8 == 0x07_80_00)
        #expect(d.deviceFeatures & 0xFF_FFFF == 0)
        #expect(d.deviceFeatures & (1 << 32) != 0)           // VIRTIO_F_VERSION_1
        #expect(d.read(0x12, 2) == 2)                        // num_queues
    }

    /// Output to a file, appended; each chain back at once with length 0 (the device only
    /// reads transmit buffers), as `put_chars` waits for it.
    @Test func theGuestsOutputIsAppendedToAFile() throws {
        let path = temporaryPath("out.log")
        unlink(path)
        defer { unlink(path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        _ = "boot\n".withCString { write(fd, $0, 5) }
        close(fd)
        let d = try D(options: "chardev=file:\(path)")
        d.bringUp()
        d.send("hello, ")
        d.send("world\n")
        #expect(d.queues[1]?.takeUsed().map(\.length) == [0, 0])
        #expect(d.msiVectors.contains(2))
        #expect(d.device?.bytesOut == 13)
        d.device?.shutdown()
        #expect(try contents(path) == "boot\nhello, world\n")
    }

    /// A chain is read up to 64 KiB; the rest is dropped and counted. Chains with
    /// device-writable buffers on transmitq0, or device-readable ones on receiveq0, or
    /// buffers outside RAM, come back empty and counted (§5.3.6.1, §5.3.6.2).
    @Test func hugeAndBadChainsAreBounded() throws {
        let d = try D()
        d.bringUp()
        d.queues[1]?.addChain([(d.buffer(zeroed: 256 << 10), UInt32(256 << 10), false)])
        d.queues[1]?.addChain([(d.buffer([1, 2]), 2, false), (d.buffer(zeroed: 8), 8, true)])
        d.queues[1]?.addChain([(GuestAddress(0xFFFF_0000_0000), 64, false)])
        d.kick(1)
        #expect(d.queues[1]?.takeUsed().map(\.length) == [0, 0, 0])
        #expect(d.device?.badRequests == 2)
        #expect(d.device?.bytesOut == 65536)
        #expect(d.device?.droppedOutput == UInt64((256 << 10) - 65536))
        d.send("ok")
        #expect(d.queues[1]?.takeUsed().map(\.length) == [0])   // and it goes on
    }

    /// One kick of 1,024 chains of 4 KiB: the kick stops at the per-action budget (1 MiB)
    /// and the rest is sent from the I/O loop.
    @Test func aKickIsBoundedAndTheRestContinuesOnTheLoop() throws {
        let d = try D(options: "queue-size=1024")
        d.bringUp()
        let page = d.buffer(zeroed: 4096)
        for _ in 0 ..< 1024 { d.queues[1]?.addChain([(page, 4096, false)]) }
        let meter = d.console.function.cost
        meter.resetWorst()
        d.kick(1)
        #expect(d.queues[1]?.usedIndex == 256)
        d.machine.runQueuedWork()
        #expect(d.queues[1]?.usedIndex == 1024)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
    }

    /// `socket:`: what the client sends fills the guest's input buffers, and only while it
    /// has them (the rest waits in the socket until the next kick of receiveq0); what the
    /// guest writes reaches the client. A second client waits in the backlog while one is
    /// connected (QEMU's socket chardev takes one at a time) and is taken when it leaves.
    @Test func aSocketClientTalksBothWays() throws {
        let path = temporaryPath("sock")
        let d = try D(options: "chardev=socket:\(path)")
        d.machine.loop.startThread()
        defer { d.machine.loop.stop(); d.device?.shutdown() }
        func locked<T>(_ body: () -> T) -> T { d.console.function.lock.withLock(body) }
        d.bringUp()
        var client: ConsoleClient? = try #require(ConsoleClient(path: path))
        let buffers = d.postInput(2, size: 64)
        #expect(eventually { locked { d.device?.channel.isConnected == true } })
        client?.send(String(repeating: "x", count: 100) + String(repeating: "y", count: 28))
        var used: [(id: UInt32, length: UInt32)] = []
        #expect(eventually { used += locked { d.queues[0]?.takeUsed() ?? [] }; return used.count == 2 })
        #expect(used.map(\.length) == [64, 64])
        #expect(d.bytes(at: buffers[0], 64) == Array(repeating: UInt8(ascii: "x"), count: 64))
        client?.send("z")
        usleep(50_000)
        #expect(locked { d.device?.bytesIn } == 128)          // no buffers: it waits in the socket
        let more = d.postInput(1)
        #expect(eventually { locked { d.device?.bytesIn } == 129 })
        #expect(d.bytes(at: more[0], 1) == [UInt8(ascii: "z")])

        d.send("pong\n")
        #expect(client?.receive(5) == Array("pong\n".utf8))

        let second = try #require(ConsoleClient(path: path))  // queued in the backlog
        usleep(50_000)
        #expect(locked { d.device?.channel.connections } == 1)
        client = nil                                          // the first leaves
        #expect(eventually { locked { d.device?.channel.connections } == 2 })
        d.send("again")
        #expect(second.receive(5) == Array("again".utf8))
    }

    /// A receive chain without room (a zero-length buffer) comes back empty and the next
    /// one gets the bytes: it was put back and taken again on every turn of the loop, which
    /// spun. A client that shuts its sending side while the guest has no buffers is kept
    /// (parked), and what it sent arrives once the guest posts some.
    @Test func roomlessChainsAndHalfClosedClients() throws {
        let path = temporaryPath("half")
        let d = try D(options: "chardev=socket:\(path)")
        d.machine.loop.startThread()
        defer { d.machine.loop.stop(); d.device?.shutdown() }
        func locked<T>(_ body: () -> T) -> T { d.console.function.lock.withLock(body) }
        d.bringUp()
        let client = try #require(ConsoleClient(path: path))
        #expect(eventually { locked { d.device?.channel.isConnected == true } })
        locked { d.queues[0]?.addChain([(d.buffer(zeroed: 8), 0, true)]) }
        let good = d.postInput(1)
        client.send("ab")
        #expect(eventually { locked { d.device?.bytesIn } == 2 })
        #expect(locked { d.device?.badRequests } == 1)
        #expect(d.bytes(at: good[0], 2) == Array("ab".utf8))

        client.send("bye")
        shutdown(client.fd, Int32(SHUT_WR))
        usleep(100_000)
        #expect(locked { d.device?.channel.isConnected } == true)
        let late = d.postInput(1)
        #expect(eventually { locked { d.device?.bytesIn } == 5 })
        #expect(d.bytes(at: late[0], 3) == Array("bye".utf8))
        d.postInput(1)                                        // the next read finds its end
        #expect(eventually { locked { d.device?.channel.isConnected } == false })
    }

    /// A parked client (it shut its side while the guest had no buffers) that then closes
    /// is not watched by the loop, so nothing saw it go and the next client waited in the
    /// backlog until the guest asked for input; the once-a-second idle check lets it go.
    @Test func aParkedClientThatLeavesDoesNotHoldTheNext() throws {
        let path = temporaryPath("park")
        let d = try D(options: "chardev=socket:\(path)")
        d.machine.loop.startThread()
        defer { d.machine.loop.stop(); d.device?.shutdown() }
        func locked<T>(_ body: () -> T) -> T { d.console.function.lock.withLock(body) }
        d.bringUp()
        var first: ConsoleClient? = try #require(ConsoleClient(path: path))
        #expect(eventually { locked { d.device?.channel.isConnected == true } })
        first?.send("x")
        if let fd = first?.fd { shutdown(fd, Int32(SHUT_WR)) }
        #expect(eventually { locked { d.device?.channel.isWaitingForInput == false } })   // no buffers
        usleep(50_000)
        first = nil                                          // gone for good, unseen
        let second = try #require(ConsoleClient(path: path))
        usleep(50_000)
        #expect(locked { d.device?.channel.connections } == 1)
        d.machine.advance(nanoseconds: VirtioConsole.idleInputCheckNanoseconds)
        #expect(eventually { locked { d.device?.channel.connections } == 2 })
        d.send("hi")
        #expect(second.receive(2) == Array("hi".utf8))
    }

    /// Without a client, and with `chardev=none`, output is taken and the guest goes on.
    @Test func outputWithNobodyListeningIsDropped() throws {
        let path = temporaryPath("idle")
        let d = try D(options: "chardev=socket:\(path)")
        defer { d.device?.shutdown() }
        d.bringUp()
        d.send("lost")
        #expect(d.queues[1]?.takeUsed().map(\.length) == [0])
        #expect(d.device?.droppedOutput == 4)
        d.device?.shutdown()
        #expect(access(path, F_OK) != 0)                     // the socket file is removed
    }

    @Test func badOptionsNameTheOption() throws {
        func error(_ options: String) -> String? {
            do { _ = try D(options: options); return nil } catch { return "\(error)" }
        }
        #expect(error("chardev=tty")?.contains("'chardev'") == true)
        #expect(error("chardev=file:")?.contains("'chardev'") == true)
        #expect(error("chardev=file:/nonexistent/dir/log")?.contains("No such file or directory") == true)
        let notASocket = temporaryPath("plain")
        let fd = open(notASocket, O_WRONLY | O_CREAT, 0o600)
        close(fd)
        defer { unlink(notASocket) }
        #expect(error("chardev=socket:\(notASocket)")?.contains("not a socket") == true)
        #expect(error("queue-size=12")?.contains("power of two") == true)
        #expect(error("bogus=1") == "unknown option 'bogus' for device virtio-console")
    }
}

private func contents(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = read(fd, &buffer, buffer.count)
    return String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
}
