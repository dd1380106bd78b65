import Synchronization
import Testing
import VMMNet
@testable import NetBackends

/// The device side shared by the backends: one burst per readiness event.
@Suite struct ReceiverPortTests {
    final class Device: FrameReceiver, @unchecked Sendable {
        let frames = Mutex(0)
        func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool { frames.withLock { $0 += 1 }; return true }
        func linkStateChanged(up: Bool) {}
    }

    static let frame = [UInt8](repeating: 0xAB, count: 60)

    /// Frames are counted once, at the end of the burst.
    @Test func aBurstCountsItsFramesAtItsEnd() {
        let counters = BackendCounters(serialized: true)
        let port = ReceiverPort(counters: counters, linkUp: true)
        let device = Device()
        port.attach(device)
        port.burst { offer in
            Self.frame.withUnsafeBytes { f in
                for _ in 0 ..< 3 { #expect(offer(f, nil)) }
            }
            #expect(counters.rxFrames.load(ordering: .relaxed) == 0)
        }
        #expect(device.frames.withLock { $0 } == 3)
        #expect(counters.rxFrames.load(ordering: .relaxed) == 3)
        #expect(counters.rxBytes.load(ordering: .relaxed) == 180)
    }

    /// stop() on another thread while the loop is in a burst: the burst ends at its next
    /// frame, which is neither delivered nor held, as when each frame looked the receiver up.
    @Test func aDetachEndsTheBurstInProgress() {
        let port = ReceiverPort(counters: BackendCounters(serialized: true), linkUp: true)
        let device = Device()
        port.attach(device)
        port.burst { offer in
            Self.frame.withUnsafeBytes { f in
                #expect(offer(f, nil))
                port.detach()
                #expect(!offer(f, nil))
            }
        }
        #expect(device.frames.withLock { $0 } == 1)
        #expect(!port.isHolding)
    }
}
