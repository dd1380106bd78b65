#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Testing
import VMMNet
import VMMTestKit

@Suite struct LinkControlCaptureTests {
    final class Counting: FrameReceiver, @unchecked Sendable {
        let frames = Mutex(0)
        func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
            self.frames.withLock { $0 += frames.count }
            return frames.count
        }
        func linkStateChanged(up: Bool) {}
    }

    /// A capture sees the frames sent and received while it runs, and none before or
    /// after (frames skip the capture and fault checks when neither is in place).
    @Test func captureRecordsOnlyWhileRunning() throws {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = Counting()
        link.start(receiver: device)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("link-\(UUID().uuidString.prefix(8)).pcap").path
        defer { unlink(path) }
        func frame(_ length: Int, _ fill: UInt8) -> [UInt8] {
            FrameBuilder.broadcast + [0x52, 0x54, 0, 0, 0, 1, 0x88, 0xB5] + [UInt8](repeating: fill, count: length - 14)
        }
        let before = frame(60, 1), during = frame(100, 2), received = frame(80, 3), after = frame(70, 4)
        before.withUnsafeBytes { #expect(link.send([$0], header: nil) == .sent) }
        try link.startCapture(path: path)
        during.withUnsafeBytes { #expect(link.send([$0], header: nil) == .sent) }
        #expect(wire.inject(received))
        #expect(link.stopCapture())
        after.withUnsafeBytes { #expect(link.send([$0], header: nil) == .sent) }
        #expect(wire.sent.count == 3)
        #expect(device.frames.withLock { $0 } == 1)

        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        var lengths: [Int] = []
        var at = 24   // pcap global header
        while at + 16 <= file.count {
            let included = Int(file[at + 8]) | Int(file[at + 9]) << 8 | Int(file[at + 10]) << 16 | Int(file[at + 11]) << 24
            lengths.append(included)
            at += 16 + included
        }
        #expect(lengths == [100, 80])
    }

    /// A frame with its header in front goes to the backend as such; with a capture in
    /// between, as a plain send the capture records too.
    @Test func headerInFrontPassesThroughUnlessInterposed() throws {
        let wire = InMemoryEndpoint(capabilities: BackendCapabilities(virtioNetHeader: true))
        let link = LinkControl(wrapping: wire)
        link.start(receiver: Counting())
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("link-\(UUID().uuidString.prefix(8)).pcap").path
        defer { unlink(path) }
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 16)
        var buffer = [UInt8](repeating: 0, count: VirtioNetHeader.size) + FrameBuilder.broadcast + [0x52, 0x54, 0, 0, 0, 1, 0x88, 0xB5]
            + [UInt8](repeating: 9, count: 46)
        buffer.withUnsafeMutableBytes { header.write(to: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< VirtioNetHeader.size])) }
        func send() -> SendResult {
            buffer.withUnsafeBytes { link.send([UnsafeRawBufferPointer(rebasing: $0[VirtioNetHeader.size...])], headerInFront: header) }
        }
        #expect(send() == .sent)
        try link.startCapture(path: path)
        #expect(send() == .sent)
        #expect(link.stopCapture())
        #expect(wire.sent.map(\.headerInFront) == [true, false])
        #expect(wire.sent.allSatisfy { $0.header == header && $0.bytes == Array(buffer[VirtioNetHeader.size...]) })
        link.setLink(up: false)
        #expect(send() == .dropped(.linkDown))
    }
}
