import VMMCore

/// Offloads that a virtio-net header can describe (virtio 1.2 §5.1.6.2), used both for
/// what a backend accepts and for what a guest negotiated to receive.
///
/// The members are inlinable constants, not `static let`s: a device's receive path tests
/// them per frame, and a `static let` of another module is read through its lazy
/// initializer's accessor (a call per frame in virtio-net's receive, callgrind).
public struct NetOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    @inlinable public static var checksum: NetOffloads { NetOffloads(rawValue: 1 << 0) }
    @inlinable public static var tso4: NetOffloads { NetOffloads(rawValue: 1 << 1) }
    @inlinable public static var tso6: NetOffloads { NetOffloads(rawValue: 1 << 2) }
    @inlinable public static var tsoECN: NetOffloads { NetOffloads(rawValue: 1 << 3) }
    @inlinable public static var ufo: NetOffloads { NetOffloads(rawValue: 1 << 4) }
}

/// What a backend can take and give.
public struct BackendCapabilities: Sendable, Equatable {
    /// Frames may carry a virtio-net header both ways (TAP with IFF_VNET_HDR).
    public var virtioNetHeader: Bool
    /// Offloads the backend completes itself for frames sent with a header.
    public var offloads: NetOffloads
    /// The largest frame (Ethernet header onward, no header, no FCS) the backend accepts.
    /// A device never hands a backend anything larger; TSO frames are segmented to fit.
    public var maxFrameSize: Int

    public init(virtioNetHeader: Bool = false, offloads: NetOffloads = [], maxFrameSize: Int = 65_535) {
        self.virtioNetHeader = virtioNetHeader
        self.offloads = offloads
        self.maxFrameSize = maxFrameSize
    }
}

/// Why a frame was not delivered, for counters (never a silent drop).
public enum DropReason: String, Sendable, CaseIterable {
    case linkDown = "link-down"
    case oversized
    case backendError = "backend-error"
    case wouldBlock = "would-block"
    case filtered
    case fault = "fault-injected"
    case malformed
}

public enum SendResult: Sendable, Equatable {
    case sent
    case dropped(DropReason)
}

/// One frame a backend read, and its virtio-net header when the backend has them.
public struct ReceivedFrame {
    public var bytes: UnsafeRawBufferPointer
    public var header: VirtioNetHeader?
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer, header: VirtioNetHeader?) {
        self.bytes = bytes
        self.header = header
    }
}

/// The device side of a backend: where received frames and link changes go. The
/// backend calls these on the I/O loop thread; the device takes its own lock.
public protocol FrameReceiver: AnyObject, Sendable {
    /// Frames the backend has now (what one readiness event brought, a TAP read loop's 64
    /// at most), in order, read before the call: the device takes them under one lock and
    /// makes them visible together, with one used-index publish, one fence and at most
    /// one interrupt, as vhost-net's `vhost_add_used_and_signal_n` — no backend syscall
    /// runs while the device is locked. Returns how many it took, from the first; the
    /// rest found no guest buffer, or the delivery reached the device's per-action budget:
    /// the backend keeps them, stops reading, and offers them again after
    /// `NetworkBackend.resumeReceive()` (the guest's next buffers, or the device's loop
    /// turn after a budget stop). Back-pressure, never a silent drop and never a busy loop.
    func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int
    /// The backend's link went up or down (a switch died, a peer disconnected…), or may
    /// have. `up` is the link as the caller saw it; notices from different threads (QMP's
    /// set_link, a backend's own change on the I/O loop) can arrive in another order than
    /// the changes, so a device reads its backend's `isLinkUp` under its lock and acts on
    /// a difference from what it last reported: then the last notice leaves it right.
    func linkStateChanged(up: Bool)
}

extension UnsafeBufferPointer where Element == ReceivedFrame {
    /// For a receiver that takes frames one at a time: how many, from the first, `take`
    /// accepted; it is not called after the first it refuses.
    @inlinable
    public func acceptedPrefix(_ take: (ReceivedFrame) -> Bool) -> Int {
        for i in indices where !take(self[i]) { return i }
        return count
    }
}

extension FrameReceiver {
    /// One frame on its own; false when the device had no buffer for it.
    @inlinable
    public func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        var one = ReceivedFrame(frame, header: header)
        return withUnsafePointer(to: &one) { receive(UnsafeBufferPointer(start: $0, count: 1)) } == 1
    }
}

/// One network backend (tap, vde, user, stream) or a filter wrapping one (capture,
/// faults). Devices never know which one they talk to; backends never know which device.
public protocol NetworkBackend: AnyObject, Sendable {
    /// e.g. `tap:tap0`, for logs and `swiftvmm` messages.
    var description: String { get }
    var capabilities: BackendCapabilities { get }
    var isLinkUp: Bool { get }
    var counters: BackendCounters { get }

    /// Begins delivering frames to `receiver` through the I/O loop.
    func start(receiver: FrameReceiver)
    /// Sends one frame given as host views of guest buffers (no copy is forced). `header`
    /// is only passed when `capabilities.virtioNetHeader`; nil means "no offload".
    /// Called from a vCPU thread or the I/O loop; never blocks.
    func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult
    /// The device can take frames again (the guest added receive buffers).
    func resumeReceive()
    /// What the guest agreed to receive (TUNSETOFFLOAD for tap); frames the backend
    /// delivers must not use offloads outside this set.
    func setReceiveOffloads(_ offloads: NetOffloads)
    /// Releases everything (fds, the TAP it created, socket files). Idempotent.
    func stop()
}

/// Creates backends from a device's options (`net=…`, `capture=…`, fault options…),
/// taking the keys it understands. Registered in the machine's `ServiceRegistry`.
public protocol NetworkBackendFactory: Sendable {
    func makeBackend(options: inout DeviceOptions, eventLoop: EventLoop, clock: DeviceClock) throws -> NetworkBackend
}

public enum NetworkBackendError: Error, CustomStringConvertible {
    case noFactory
    public var description: String {
        switch self {
        case .noFactory: "this machine offers no network backends"
        }
    }
}

public extension DeviceEnvironment {
    /// Opens the backend named in the device's options (what a NIC calls in its `init`).
    /// The backend comes wrapped in the NIC's `LinkControl` (QMP's set_link), registered
    /// under the device's control name when the machine offers `NetworkLinks`. Returned as
    /// the concrete (final) class, so a device's per-frame `send` and `capabilities` are
    /// direct calls rather than through the protocol's witness table; the device still
    /// cannot tell which backend is behind it.
    func openNetworkBackend(_ options: inout DeviceOptions) throws -> LinkControl {
        guard let factory = services.resolve(NetworkBackendFactory.self) else { throw NetworkBackendError.noFactory }
        let loop = eventLoop, clock = clock
        let link = LinkControl(wrapping: try factory.makeBackend(options: &options, eventLoop: loop, clock: clock),
                               deviceLock: lock, loop: loop, clock: clock,
                               makeBackend: { opts in try factory.makeBackend(options: &opts, eventLoop: loop, clock: clock) })
        services.resolve(NetworkLinks.self)?.register(controlName, link)
        return link
    }
}
