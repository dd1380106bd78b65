import Synchronization
import VMMCore
import VMMNet

/// A backend that consumes frames without copying or storing them, so an in-memory
/// benchmark measures the device alone (the test kit's InMemoryEndpoint keeps a copy of
/// each frame, which is right for tests and wrong for timing). It can also inject frames
/// toward the device, as a backend's receive path would.
package final class SinkEndpoint: NetworkBackend, @unchecked Sendable {
    package let description = "sink"
    package let capabilities: BackendCapabilities
    package let counters = BackendCounters()
    package var isLinkUp: Bool { true }
    /// Frames handed to `send` (vCPU thread only in these benchmarks).
    package private(set) var framesSent = 0
    /// The device's side, held in a box that `inject` borrows without retaining: a
    /// retain and release per frame were ~5 % of what a receive benchmark charged to the
    /// device. Set before the benchmark runs, on the same thread.
    private var receiver: ReceiverBox?
    private var borrowedReceiver: Unmanaged<ReceiverBox>?

    package init(capabilities: BackendCapabilities) { self.capabilities = capabilities }

    package func start(receiver: FrameReceiver) {
        let box = ReceiverBox(receiver)
        self.receiver = box
        borrowedReceiver = .passUnretained(box)
    }

    package func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        framesSent &+= 1
        return .sent
    }

    /// Hands `frame` to the device on its own; false when the guest had no buffer for it.
    @inline(__always)
    package func inject(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        borrowedReceiver?._withUnsafeGuaranteedRef { $0.receiver.receive(frame, header: header) } ?? false
    }

    /// Hands `frames` to the device in one delivery, as TAP's read loop hands over what
    /// one readiness event brought; how many it took.
    @inline(__always)
    package func inject(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        borrowedReceiver?._withUnsafeGuaranteedRef { $0.receiver.receive(frames) } ?? 0
    }

    package func resumeReceive() {}
    package func setReceiveOffloads(_ offloads: NetOffloads) {}
    package func stop() {
        borrowedReceiver = nil
        receiver = nil
    }
}

private final class ReceiverBox {
    let receiver: FrameReceiver
    init(_ receiver: FrameReceiver) { self.receiver = receiver }
}

/// Gives the next device created the sink it was handed.
package final class SinkFactory: NetworkBackendFactory, @unchecked Sendable {
    package let sink: SinkEndpoint
    package init(_ sink: SinkEndpoint) { self.sink = sink }
    package func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        _ = try options.take("net")
        return sink
    }
}
