import Synchronization
import VMMCore
import VMMNet

/// A network backend with nothing behind it, for device tests: the test injects
/// frames toward the device and inspects what the device sent.
public final class InMemoryEndpoint: NetworkBackend, @unchecked Sendable {
    public struct SentFrame: Equatable, Sendable {
        public let bytes: [UInt8]
        public let header: VirtioNetHeader?
        /// How many pieces the device handed the frame over in (1: it copied the frame
        /// whole; more: some came straight from guest memory).
        public let segmentCount: Int
    }

    public let description = "memory"
    public var capabilities: BackendCapabilities
    public let counters = BackendCounters()
    private let state = Mutex<(sent: [SentFrame], link: Bool, receiver: FrameReceiver?, offloads: NetOffloads, resumes: Int)>(([], true, nil, [], 0))

    public init(capabilities: BackendCapabilities = BackendCapabilities()) {
        self.capabilities = capabilities
    }

    public var isLinkUp: Bool { state.withLock { $0.link } }
    public var sent: [SentFrame] { state.withLock { $0.sent } }
    /// Removes and returns the frames sent so far.
    public func takeSent() -> [SentFrame] { state.withLock { s in defer { s.sent.removeAll() }; return s.sent } }
    /// What the device last asked the backend to deliver (`setReceiveOffloads`).
    public var receiveOffloads: NetOffloads { state.withLock { $0.offloads } }
    /// How many times the device said it has buffers again.
    public var resumeCount: Int { state.withLock { $0.resumes } }

    public func start(receiver: FrameReceiver) { state.withLock { $0.receiver = receiver } }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard isLinkUp else {
            counters.dropped(.linkDown)
            return .dropped(.linkDown)
        }
        var bytes: [UInt8] = []
        for s in segments { bytes.append(contentsOf: s) }
        guard bytes.count <= capabilities.maxFrameSize else {
            counters.dropped(.oversized)
            return .dropped(.oversized)
        }
        counters.sent(bytes: bytes.count)
        state.withLock { $0.sent.append(SentFrame(bytes: bytes, header: header, segmentCount: segments.count)) }
        return .sent
    }

    /// Delivers a frame to the device now; false when the device had no buffer.
    @discardableResult
    public func inject(_ frame: [UInt8], header: VirtioNetHeader? = nil) -> Bool {
        guard let r = state.withLock({ $0.receiver }) else { return false }
        let ok = frame.withUnsafeBytes { r.receive($0, header: header) }
        if ok { counters.received(bytes: frame.count) }
        return ok
    }

    /// Delivers `frames` to the device in one delivery, as a backend's read loop hands
    /// over what one readiness event brought (`FrameReceiver.receive(_:)`): the device
    /// publishes them together. Returns how many it took, from the first.
    @discardableResult
    public func deliver(_ frames: [[UInt8]], header: VirtioNetHeader? = nil) -> Int {
        guard let r = state.withLock({ $0.receiver }) else { return 0 }
        let accepted = withReceivedFrames(frames, header: header) { r.receive($0) }
        for frame in frames.prefix(accepted) { counters.received(bytes: frame.count) }
        return accepted
    }

    public func setLink(up: Bool) {
        let r = state.withLock { s -> FrameReceiver? in
            s.link = up
            return s.receiver
        }
        r?.linkStateChanged(up: up)
    }

    public func resumeReceive() { state.withLock { $0.resumes += 1 } }
    public func setReceiveOffloads(_ offloads: NetOffloads) { state.withLock { $0.offloads = offloads } }
    public func stop() { state.withLock { $0.receiver = nil } }
}

/// Gives each NIC in a `TestMachine` an `InMemoryEndpoint` (or the one the test queued).
public final class InMemoryNetworkFactory: NetworkBackendFactory, @unchecked Sendable {
    private let state = Mutex<(queued: [InMemoryEndpoint], made: [InMemoryEndpoint])>(([], []))
    public init() {}

    /// The next device created gets `endpoint` (to give it particular capabilities).
    public func enqueue(_ endpoint: InMemoryEndpoint) { state.withLock { $0.queued.append(endpoint) } }
    public var endpoints: [InMemoryEndpoint] { state.withLock { $0.made } }

    public func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend {
        if let net = try options.take("net"), net != "memory" {
            throw OptionError.badValue(key: "net", value: net, reason: "the test machine only offers net=memory")
        }
        return state.withLock { s in
            let e = s.queued.isEmpty ? InMemoryEndpoint() : s.queued.removeFirst()
            s.made.append(e)
            return e
        }
    }
}

/// `frames` as a backend hands them to a device (`FrameReceiver.receive(_:)`), each with
/// `header`, for the length of `body`: what a test of a receiver or a backend's port
/// delivers.
public func withReceivedFrames<R>(_ frames: [[UInt8]], header: VirtioNetHeader? = nil,
                                  _ body: (UnsafeBufferPointer<ReceivedFrame>) -> R) -> R {
    let bytes = frames.flatMap { $0 }
    return bytes.withUnsafeBytes { raw in
        var start = 0
        let received = frames.map { frame -> ReceivedFrame in
            defer { start += frame.count }
            return ReceivedFrame(UnsafeRawBufferPointer(rebasing: raw[start ..< start + frame.count]), header: header)
        }
        return received.withUnsafeBufferPointer(body)
    }
}
