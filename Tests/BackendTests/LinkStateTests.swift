import Synchronization
import Testing
import VMMCore
import VMMNet
import VMMTestKit

/// How a device learns its link through `LinkControl`: it is told of every change and
/// reads `isLinkUp`, as the e1000 and virtio-net do, so the order in which notices
/// arrive cannot leave it wrong.
@Suite struct LinkStateTests {
    /// A device stand-in that reads the link at every notice and records each change.
    final class ReadingReceiver: FrameReceiver, @unchecked Sendable {
        weak var link: LinkControl?
        private let changes = Mutex<[Bool]>([])
        var seen: [Bool] { changes.withLock { $0 } }
        func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int { frames.count }
        func linkStateChanged(up _: Bool) {
            guard let now = link?.isLinkUp else { return }
            changes.withLock { if $0.last != now { $0.append(now) } }
        }
    }

    /// QMP's x-swiftvmm-swap-backend pulls the cable and plugs it back: a device that
    /// reads the link sees it down during the swap even though both backends are up.
    @Test func swapShowsTheDeviceALinkFlap() throws {
        let running = try RunningLoop()
        let fresh = InMemoryEndpoint()
        let link = LinkControl(wrapping: InMemoryEndpoint(), deviceLock: DeviceLock(), loop: running.loop,
                               clock: running.loop, makeBackend: { _ in fresh })
        let device = ReadingReceiver()
        device.link = link
        link.start(receiver: device)
        try link.swap(options: DeviceOptions(device: "e1000"))
        #expect(device.seen == [false, true])
        #expect(link.isLinkUp)
    }

    /// set_link and the backend's own link each tell the device; it ends up with the
    /// link as it is, whichever way the two combine.
    @Test func administrativeAndBackendLinkCombine() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        let device = ReadingReceiver()
        device.link = link
        link.start(receiver: device)
        link.setLink(up: false)
        wire.setLink(up: false)
        wire.setLink(up: true)                 // the backend is back, the cable still out
        #expect(device.seen == [false])
        link.setLink(up: true)
        #expect(device.seen == [false, true])
        wire.setLink(up: false)
        #expect(device.seen == [false, true, false])
    }

    /// A frame that arrives while the cable is out, or after the device let go, is lost
    /// and counted as such, not silently.
    @Test func framesLostToTheLinkAreCounted() {
        let wire = InMemoryEndpoint()
        let link = LinkControl(wrapping: wire)
        link.start(receiver: ReadingReceiver())
        link.setLink(up: false)
        _ = wire.inject([UInt8](repeating: 0xAB, count: 60))
        #expect(link.counters.drops(.linkDown) == 1)
        link.setLink(up: true)
        link.stop()
        _ = link.receive(UnsafeRawBufferPointer(start: nil, count: 0), header: nil)
        #expect(link.counters.drops(.linkDown) == 2)
    }
}
