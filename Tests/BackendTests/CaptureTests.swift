#if canImport(Glibc)
import Glibc
#endif
import NetBackends
import Testing
import VMMCore
import VMMNet
import VMMTestKit

@Suite(.serialized) struct CaptureTests {
    /// Reads the pcap header fields back by hand (works without tshark).
    @Test func pcapFileFormat() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/f.pcap"
        let writer = try PcapWriter(path: path)
        let frame = testFrame(1, length: 64)
        frame.withUnsafeBytes { b in writer.write([UnsafeRawBufferPointer(rebasing: b[0 ..< 20]), UnsafeRawBufferPointer(rebasing: b[20...])]) }
        try writer.close()
        try writer.close()
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 200)
        let n = read(fd, &bytes, bytes.count)
        #expect(n == 24 + 16 + 64)
        func u32(_ o: Int) -> UInt32 { bytes[o ..< o + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        #expect(u32(0) == 0xA1B2_C3D4 && u32(4) == 0x0004_0002 && u32(20) == 1)
        #expect(u32(32) == 64 && u32(36) == 64)
        #expect(Array(bytes[40 ..< 104]) == frame)
    }

    /// Frames are written under the device lock: a FIFO (or any non-regular file) would let
    /// whoever holds its other end stall the NIC, so it is refused, and opening it does not
    /// wait for a reader.
    @Test func captureRefusesAFIFO() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/fifo"
        #expect(mkfifo(path, 0o600) == 0)
        // Without a reader the open fails with ENXIO: said as "not a regular file", not as
        // "No such device or address".
        #expect(throws: PcapError.notRegularFile(path: path)) { try PcapWriter(path: path) }
        let reader = open(path, O_RDONLY | O_NONBLOCK)
        defer { close(reader) }
        #expect(throws: PcapError.notRegularFile(path: path)) { try PcapWriter(path: path) }
    }

    @Test(.enabled(if: Host.hasTshark, "needs tshark (apt-get install tshark)"))
    func bothDirectionsReadableByTshark() throws {
        let dir = TemporaryDirectory()
        let wire = dir.path + "/wire", pcap = dir.path + "/cap.pcap"
        let listener = StreamPeer.listen(unix: wire)
        defer { close(listener) }
        let running = try RunningLoop()
        var options = try DeviceSpec.parse("e1000,net=stream:unix:\(wire),capture=\(pcap)").options
        let backend = try NetBackendFactory().makeBackend(options: &options, eventLoop: running.loop, clock: running.loop)
        #expect(backend is CaptureFilter)
        let peer = try #require(StreamPeer.accept(listener))
        let receiver = RecordingReceiver()
        receiver.setAccepting(false)
        backend.start(receiver: receiver)
        let sentLengths = [60, 100, 1514]
        for (i, n) in sentLengths.enumerated() { #expect(backend.send(testFrame(i, length: n)) == .sent) }
        peer.send(testFrame(10, length: 70))
        peer.send(testFrame(11, length: 80))
        // Refused first (back-pressure), then taken: recorded once.
        #expect(eventually { receiver.refusals == 1 })
        receiver.setAccepting(true)
        backend.resumeReceive()
        #expect(eventually { receiver.frames.count == 2 })
        backend.stop()
        let out = Shell.run("tshark", ["-r", pcap, "-T", "fields", "-e", "frame.len", "-e", "eth.type"])
        #expect(out.status == 0, "\(out.output)")
        let lines = out.output.split(separator: "\n").filter { !$0.hasPrefix("Running as") }
        #expect(lines.count == 5, "\(out.output)")
        #expect(lines.compactMap { Int($0.split(separator: "\t").first ?? "") } == sentLengths + [70, 80])
        #expect(lines.allSatisfy { $0.hasSuffix("0x88b5") })
    }
}
