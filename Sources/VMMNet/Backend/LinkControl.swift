#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VMMCore

/// The administrative link of one NIC, between the device and its backend: what QMP's
/// `set_link` flips (as QEMU's `nc->link_down`). Down, the device sees its backend's link
/// go down (e1000 LSC, virtio-net status), frames it sends are dropped as `link-down`,
/// and frames from the backend are discarded. It also lets the control socket capture the
/// NIC's frames and swap its backend on a running guest. Every NIC's backend is wrapped in
/// one (`PCIDeviceContext.openNetworkBackend`).
public final class LinkControl: NetworkBackend, FrameReceiver, @unchecked Sendable {
    /// The backend now. Replaced only by `swap`, on the I/O loop with the device lock held,
    /// so no send or delivery of the device is under way with the old one.
    public var inner: NetworkBackend { current.withLock { $0 } }
    private let current: Mutex<NetworkBackend>
    private let deviceLock: DeviceLock?
    private let loop: EventLoop?
    private let makeBackend: (@Sendable (inout DeviceOptions) throws -> NetworkBackend)?
    private let lastOffloads = Mutex<NetOffloads?>(nil)
    private let administrativelyUp = Atomic<Bool>(true)
    /// The device; weak, as in every filter: the device owns this link.
    private struct WeakReceiver { weak var receiver: FrameReceiver? }
    private let upstreamRef = Mutex(WeakReceiver())
    private var upstream: FrameReceiver? { upstreamRef.withLock { $0.receiver } }
    /// A capture started over the control socket (QMP `x-swiftvmm-capture-start`).
    private let capture = Mutex<PcapWriter?>(nil)

    /// - Parameters: the device's lock and loop, and how to open a backend from options
    ///   (`net=…`), for `swap`; without them the backend cannot be swapped.
    public init(wrapping inner: NetworkBackend, deviceLock: DeviceLock? = nil, loop: EventLoop? = nil,
                makeBackend: (@Sendable (inout DeviceOptions) throws -> NetworkBackend)? = nil) {
        current = Mutex(inner)
        self.deviceLock = deviceLock; self.loop = loop; self.makeBackend = makeBackend
    }

    /// Replaces the backend with one opened from `options` (`net=tap:tap1`…) while the
    /// guest runs: the device sees a link flap; the old backend is stopped and closed
    /// (frames it held for the device are lost, as on a cable swap); the new one gets the
    /// receive offloads the guest accepted. Throws the new backend's option errors, leaving
    /// the old one in place.
    public func swap(options: DeviceOptions) throws {
        guard let makeBackend, let deviceLock, let loop else { throw LinkControlError.cannotSwap }
        var opts = options
        let fresh = try makeBackend(&opts)
        do { try opts.rejectUnknown() } catch { fresh.stop(); throw error }
        // Five seconds is far beyond one bounded device event; past it the loop is
        // stopping (the VM is shutting down) and the new backend is closed unused.
        do {
            try loop.runAndWait(timeout: 5, { [self] in
                deviceLock.withLock {
                    let old = current.withLock { c -> NetworkBackend in defer { c = fresh }; return c }
                    let receiver = upstream
                    if isAdministrativelyUp { receiver?.linkStateChanged(up: false) }
                    old.stop()
                    if let offloads = lastOffloads.withLock({ $0 }) { fresh.setReceiveOffloads(offloads) }
                    fresh.start(receiver: self)
                    if isLinkUp { receiver?.linkStateChanged(up: true) }
                }
            })
        } catch {
            fresh.stop()
            throw LinkControlError.loopNotRunning
        }
    }

    public var description: String { inner.description }
    public var capabilities: BackendCapabilities { inner.capabilities }
    public var isLinkUp: Bool { administrativelyUp.load(ordering: .acquiring) && inner.isLinkUp }
    public var counters: BackendCounters { inner.counters }
    public var isAdministrativelyUp: Bool { administrativelyUp.load(ordering: .acquiring) }

    /// Sets the administrative link; the device hears of a change of what it sees.
    public func setLink(up: Bool) {
        let before = isLinkUp
        administrativelyUp.store(up, ordering: .releasing)
        let after = isLinkUp
        if before != after { upstream?.linkStateChanged(up: after) }
        if up { inner.resumeReceive() }
    }

    /// Starts recording every frame this NIC sends or receives to a pcap file at `path`.
    public func startCapture(path: String) throws(PcapError) {
        let writer = try PcapWriter(path: path)
        let previous = capture.withLock { c -> PcapWriter? in defer { c = writer }; return c }
        try? previous?.close()
    }

    /// Stops a capture; false when none was running.
    @discardableResult
    public func stopCapture() -> Bool {
        guard let writer = capture.withLock({ c -> PcapWriter? in defer { c = nil }; return c }) else { return false }
        try? writer.close()
        return true
    }

    public var capturePath: String? { capture.withLock { $0?.path } }

    public func start(receiver: FrameReceiver) {
        upstreamRef.withLock { $0.receiver = receiver }
        inner.start(receiver: self)
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard isAdministrativelyUp else {
            counters.dropped(.linkDown)
            return .dropped(.linkDown)
        }
        let result = inner.send(segments, header: header)
        if result == .sent, let writer = capture.withLock({ $0 }) { writer.write(segments) }
        return result
    }

    public func resumeReceive() { inner.resumeReceive() }
    public func setReceiveOffloads(_ offloads: NetOffloads) {
        lastOffloads.withLock { $0 = offloads }
        inner.setReceiveOffloads(offloads)
    }
    public func stop() {
        stopCapture()
        inner.stop()
    }

    public func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        guard isAdministrativelyUp else { return true } // the cable is out: the frame is lost
        guard let receiver = upstream else { return true }
        guard receiver.receive(frame, header: header) else { return false }
        if let writer = capture.withLock({ $0 }) { writer.write(frame) }
        return true
    }

    public func linkStateChanged(up: Bool) {
        guard isAdministrativelyUp else { return }
        upstream?.linkStateChanged(up: up)
    }
}

public enum LinkControlError: Error, CustomStringConvertible {
    case cannotSwap
    case loopNotRunning
    public var description: String {
        switch self {
        case .cannotSwap: "this NIC's backend cannot be swapped"
        case .loopNotRunning: "the VM's I/O loop is not running (is it stopping?); the backend was not swapped"
        }
    }
}

/// The NICs of a machine by control name (`id=`, else `devN`), for the control socket.
/// Registered in the machine's `ServiceRegistry`; NICs register as they open backends.
public final class NetworkLinks: @unchecked Sendable {
    private let links = Mutex<[(name: String, link: LinkControl)]>([])
    public init() {}
    public func register(_ name: String, _ link: LinkControl) { links.withLock { $0.append((name, link)) } }
    public func link(named name: String) -> LinkControl? { links.withLock { l in l.first { $0.name == name }?.link } }
    public var all: [(name: String, link: LinkControl)] { links.withLock { $0 } }
}
