import Synchronization
import VMMCore

/// The administrative link of one NIC, between the device and its backend: what QMP's
/// `set_link` flips (as QEMU's `nc->link_down`). Down, the device sees its backend's link
/// go down (e1000 LSC, virtio-net status), frames it sends are dropped as `link-down`,
/// and frames from the backend are discarded. Every NIC's backend is wrapped in one
/// (`PCIDeviceContext.openNetworkBackend`).
public final class LinkControl: NetworkBackend, FrameReceiver, @unchecked Sendable {
    public let inner: NetworkBackend
    private let administrativelyUp = Atomic<Bool>(true)
    private let upstream = Mutex<FrameReceiver?>(nil)
    /// A capture started over the control socket (QMP `x-swiftvmm-capture-start`).
    private let capture = Mutex<PcapWriter?>(nil)

    public init(wrapping inner: NetworkBackend) { self.inner = inner }

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
        if before != after { upstream.withLock { $0 }?.linkStateChanged(up: after) }
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
        upstream.withLock { $0 = receiver }
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
    public func setReceiveOffloads(_ offloads: NetOffloads) { inner.setReceiveOffloads(offloads) }
    public func stop() {
        stopCapture()
        inner.stop()
    }

    public func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        guard isAdministrativelyUp else { return true } // the cable is out: the frame is lost
        guard let receiver = upstream.withLock({ $0 }) else { return true }
        guard receiver.receive(frame, header: header) else { return false }
        if let writer = capture.withLock({ $0 }) { writer.write(frame) }
        return true
    }

    public func linkStateChanged(up: Bool) {
        guard isAdministrativelyUp else { return }
        upstream.withLock { $0 }?.linkStateChanged(up: up)
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
