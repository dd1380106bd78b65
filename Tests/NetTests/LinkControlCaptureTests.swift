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
}
