import Synchronization
import Testing
import VMMNet
import VMMTestKit
@testable import NetBackends

/// The device side shared by the backends: one delivery per readiness event, and the
/// frames the device refuses held, in order, until it has room.
@Suite struct ReceiverPortTests {
    /// Takes at most `room` frames, and records every delivery's sizes.
    final class Device: FrameReceiver, @unchecked Sendable {
        let deliveries = Mutex<[[Int]]>([])
        let room = Mutex(Int.max)
        func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
            let taken = min(frames.count, room.withLock { r in defer { r -= min(r, frames.count) }; return r })
            deliveries.withLock { $0.append(frames.prefix(taken).map(\.bytes.count)) }
            return taken
        }
        func linkStateChanged(up: Bool) {}
    }

    /// `frames` as one delivery; how many the port is done with.
    static func deliver(_ port: ReceiverPort, _ frames: [[UInt8]]) -> Int { withReceivedFrames(frames) { port.deliver($0) } }

    /// A port with a `Device` attached that has room for `room` frames.
    static func attached(room: Int = .max) -> (ReceiverPort, Device, BackendCounters) {
        let counters = BackendCounters(serialized: true)
        let port = ReceiverPort(counters: counters, linkUp: true)
        let device = Device()
        device.room.withLock { $0 = room }
        port.attach(device)
        return (port, device, counters)
    }

    static func frame(_ n: Int) -> [UInt8] { [UInt8](repeating: 0xAB, count: n) }

    static func offer(_ port: ReceiverPort, _ frame: [UInt8]) -> Bool { frame.withUnsafeBytes { port.offer($0, header: nil) } }

    /// A delivery reaches the device in one call and is counted once.
    @Test func aDeliveryIsOneCallAndCountedOnce() {
        let (port, device, counters) = Self.attached()
        #expect(Self.deliver(port, [Self.frame(60), Self.frame(61), Self.frame(62)]) == 3)
        #expect(device.deliveries.withLock { $0 } == [[60, 61, 62]])
        #expect(counters.rxFrames.load(ordering: .relaxed) == 3)
        #expect(counters.rxBytes.load(ordering: .relaxed) == 183)
    }

    /// What the device refuses in a delivery stays with the caller (TAP keeps it where it
    /// read it): the port holds nothing and counts only what was taken.
    @Test func aDeliveryAnswersWhatWasTaken() {
        let (port, _, counters) = Self.attached(room: 1)
        #expect(Self.deliver(port, [Self.frame(60), Self.frame(61), Self.frame(62)]) == 1)
        #expect(!port.isHolding)
        #expect(counters.rxFrames.load(ordering: .relaxed) == 1)
    }

    /// Detached, the port is done with a delivery at once: lost, as on a cable with no
    /// NIC, and counted.
    @Test func aDeliveryWithNoDeviceIsCountedLost() {
        let counters = BackendCounters(serialized: true)
        let port = ReceiverPort(counters: counters, linkUp: true)
        #expect(Self.deliver(port, [Self.frame(60), Self.frame(61)]) == 2)
        #expect(counters.drops(.linkDown) == 2)
    }

    /// A refused single frame is held (copied) and offered again on `retry`.
    @Test func aRefusedFrameIsHeldUntilTaken() {
        let (port, device, counters) = Self.attached(room: 0)
        #expect(!Self.offer(port, Self.frame(60)))
        #expect(port.isHolding)
        #expect(!port.retry())
        device.room.withLock { $0 = 1 }
        #expect(port.retry())
        #expect(!port.isHolding)
        #expect(device.deliveries.withLock { $0 } == [[], [], [60]])
        #expect(counters.rxFrames.load(ordering: .relaxed) == 1)
    }

    /// Detached (stop() on another thread) while the device was refusing: the refused
    /// frame is not held for a receiver that is gone, but counted as lost.
    @Test func aFrameRefusedDuringADetachIsNotHeld() {
        let counters = BackendCounters(serialized: true)
        let port = ReceiverPort(counters: counters, linkUp: true)
        final class Detaching: FrameReceiver, @unchecked Sendable {
            weak var port: ReceiverPort?
            func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int { port?.detach(); return 0 }
            func linkStateChanged(up: Bool) {}
        }
        let device = Detaching()
        device.port = port
        port.attach(device)
        #expect(!Self.offer(port, Self.frame(60)))
        #expect(!port.isHolding)
        #expect(counters.drops(.linkDown) == 1)
    }

    /// Detached (stop()) while a frame is held: it is forgotten, counted lost, and a
    /// retry finds nothing to offer.
    @Test func aDetachForgetsTheHeldFrame() {
        let (port, _, counters) = Self.attached(room: 0)
        #expect(!Self.offer(port, Self.frame(60)))
        port.detach()
        #expect(!port.isHolding)
        #expect(counters.drops(.linkDown) == 1)
        #expect(port.retry())
        #expect(!Self.offer(port, Self.frame(61)))   // detached: lost, and counted
        #expect(counters.drops(.linkDown) == 2)
    }
}
