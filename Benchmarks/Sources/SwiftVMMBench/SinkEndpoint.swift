import Synchronization
import VMMCore
import VMMNet

/// A backend that consumes frames without copying or storing them, so an in-memory
/// benchmark measures the device alone (the test kit's InMemoryEndpoint keeps a copy of
/// each frame, which is right for tests and wrong for timing). It can also inject frames
/// toward the device, as a backend's receive path would.
final class SinkEndpoint: NetworkBackend, @unchecked Sendable {
    let description = "sink"
    let capabilities: BackendCapabilities
    let counters = BackendCounters()
    var isLinkUp: Bool { true }
    /// Frames handed to `send` (vCPU thread only in these benchmarks).
    private(set) var framesSent = 0
    private var receiver: FrameReceiver?

    init(capabilities: BackendCapabilities) { self.capabilities = capabilities }

    func start(receiver: FrameReceiver) { self.receiver = receiver }

    func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        framesSent &+= 1
        return .sent
    }

    /// Hands `frame` to the device; false when the guest had no buffer for it.
    @inline(__always)
    func inject(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        receiver?.receive(frame, header: header) ?? false
    }

    func resumeReceive() {}
    func setReceiveOffloads(_ offloads: NetOffloads) {}
    func stop() { receiver = nil }
}

/// Gives the next device created the sink it was handed.
final class SinkFactory: NetworkBackendFactory, @unchecked Sendable {
    let sink: SinkEndpoint
    init(_ sink: SinkEndpoint) { self.sink = sink }
    func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        _ = try options.take("net")
        return sink
    }
}
