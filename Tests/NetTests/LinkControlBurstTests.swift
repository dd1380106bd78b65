import Foundation
import Synchronization
import Testing
import VMMNet
import VMMTestKit

/// A backend's burst through the link: the link holds its device lock for the whole
/// burst and hands the burst's frames over without taking it again, so anything the
/// backend does inside the burst that reaches the device must not wait on that lock.
@Suite struct LinkControlBurstTests {
    /// Records what reaches the device, in order.
    final class RecordingDevice: FrameReceiver, @unchecked Sendable {
        let events = Mutex<[String]>([])
        func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
            events.withLock { $0.append("frame \(frame.count)") }
            return true
        }
        func linkStateChanged(up: Bool) { events.withLock { $0.append("link \(up ? "up" : "down")") } }
        func receiveBurst(_ deliver: () -> Void) {
            events.withLock { $0.append("begin") }
            deliver()
            events.withLock { $0.append("end") }
        }
    }

    static func frame(_ length: Int) -> [UInt8] {
        FrameBuilder.broadcast + [0x52, 0x54, 0, 0, 0, 1, 0x88, 0xB5] + [UInt8](repeating: 7, count: length - 14)
    }

    /// A TAP that vanishes mid-burst reports the link down from inside its read loop.
    @Test func linkNoticeInsideABurstReachesTheDevice() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = RecordingDevice()
        link.start(receiver: device)
        wire.burst {
            #expect(wire.inject(Self.frame(60)))
            #expect(wire.inject(Self.frame(61)))
            wire.setLink(up: false)
        }
        #expect(device.events.withLock { $0 } == ["begin", "frame 60", "frame 61", "link down", "end"])
        // Outside a burst frames take the lock again, one by one.
        wire.setLink(up: true)
        #expect(wire.inject(Self.frame(62)))
        #expect(device.events.withLock { Array($0.suffix(2)) } == ["link up", "frame 62"])
    }

    /// `stop` while the burst holds the link's device lock (a device shut down from the
    /// loop mid-burst): the link lets go of the device as the burst ends, with no loop to
    /// defer to, and the frame after the stop is not delivered.
    @Test func stopDuringABurstLetsGoOfTheDeviceAtItsEnd() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        weak var released: RecordingDevice?
        do {
            let device = RecordingDevice()
            released = device
            link.start(receiver: device)
        }
        wire.burst {
            #expect(wire.inject(Self.frame(60)))
            #expect(released != nil)
            link.stop()
            #expect(!wire.inject(Self.frame(61)))
        }
        #expect(released == nil)
    }

    /// Frames delivered from another thread while a burst runs take the lock as usual
    /// and wait for the burst; they never use the burst's unlocked path.
    @Test func anotherThreadWaitsForTheBurst() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = RecordingDevice()
        link.start(receiver: device)
        let inBurst = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let burstDone = DispatchSemaphore(value: 0), otherDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            wire.burst {
                wire.inject(Self.frame(60))
                inBurst.signal()
                release.wait()
                wire.inject(Self.frame(61))
            }
            burstDone.signal()
        }
        inBurst.wait()
        Thread.detachNewThread {
            wire.inject(Self.frame(90))
            otherDone.signal()
        }
        #expect(otherDone.wait(timeout: .now() + .milliseconds(50)) == .timedOut)
        #expect(!device.events.withLock { $0.contains("frame 90") })
        release.signal()
        burstDone.wait()
        otherDone.wait()
        #expect(device.events.withLock { $0 } == ["begin", "frame 60", "frame 61", "end", "frame 90"])
    }
}
