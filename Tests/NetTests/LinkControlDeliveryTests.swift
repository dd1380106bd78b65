import Synchronization
import Testing
import VMMNet
import VMMTestKit

/// A backend's delivery through the link: all its frames reach the device in one call,
/// with one hold of the link's device slot, and what the device refuses goes back.
@Suite struct LinkControlDeliveryTests {
    /// Records each delivery that reaches the device, and takes at most `room` frames.
    final class RecordingDevice: FrameReceiver, @unchecked Sendable {
        let events = Mutex<[String]>([])
        let room = Mutex(Int.max)
        /// Run inside the next delivery (with the link's slot held).
        let during = Mutex<(() -> Void)?>(nil)
        func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
            let taken = min(frames.count, room.withLock { r in defer { r -= min(r, frames.count) }; return r })
            events.withLock { $0.append("delivery \(frames.prefix(taken).map(\.bytes.count))") }
            during.withLock { d in defer { d = nil }; return d }?()
            return taken
        }
        func linkStateChanged(up: Bool) { events.withLock { $0.append("link \(up ? "up" : "down")") } }
    }

    static func frame(_ length: Int) -> [UInt8] {
        FrameBuilder.broadcast + [0x52, 0x54, 0, 0, 0, 1, 0x88, 0xB5] + [UInt8](repeating: 7, count: length - 14)
    }

    @Test func aDeliveryReachesTheDeviceInOneCall() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = RecordingDevice()
        link.start(receiver: device)
        #expect(wire.deliver([Self.frame(60), Self.frame(61), Self.frame(62)]) == 3)
        #expect(wire.inject(Self.frame(63)))
        #expect(device.events.withLock { $0 } == ["delivery [60, 61, 62]", "delivery [63]"])
    }

    /// The device has room for two: the link answers two, and the backend keeps the rest.
    @Test func whatTheDeviceRefusesGoesBack() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = RecordingDevice()
        device.room.withLock { $0 = 2 }
        link.start(receiver: device)
        #expect(wire.deliver([Self.frame(60), Self.frame(61), Self.frame(62)]) == 2)
        #expect(wire.counters.rxFrames.load(ordering: .relaxed) == 2)
    }

    /// With the cable administratively out, a delivery is lost whole, and counted.
    @Test func aDeliveryOnADownLinkIsDroppedAndCounted() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = RecordingDevice()
        link.start(receiver: device)
        link.setLink(up: false)
        #expect(wire.deliver([Self.frame(60), Self.frame(61)]) == 2)
        #expect(wire.counters.drops(.linkDown) == 2)
        #expect(!device.events.withLock { $0 }.contains { $0.hasPrefix("delivery") })
    }

    /// `stop` while a delivery holds the link's device slot (a device shut down from the
    /// loop during one): the link lets go of the device as the delivery ends, with no loop
    /// to defer to, and nothing more is delivered.
    @Test func stopDuringADeliveryLetsGoOfTheDeviceAtItsEnd() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        weak var released: RecordingDevice?
        do {
            let device = RecordingDevice()
            released = device
            device.during.withLock { $0 = { link.stop() } }
            link.start(receiver: device)
        }
        #expect(wire.deliver([Self.frame(60)]) == 1)
        #expect(released == nil)
        #expect(!wire.inject(Self.frame(61)))
    }
}
