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
    /// The same backend for `send`, read without the mutex: devices send with their lock
    /// held, and `swap` replaces the backend under that same lock, so a send never sees it
    /// change. The mutex cost 4 ns of a 91-ns virtio-net send in memory (Docs/performance.md).
    /// Unmanaged: `sendingHolder` holds it and the two change together under the device
    /// lock, so a send calls the backend without taking a reference; through a strong (or
    /// `unowned(unsafe)`) reference each send retained and released it (~17 % of a
    /// virtio-net send in memory).
    private var sendingBackend: Unmanaged<Lent<NetworkBackend>>
    private var sendingHolder: Lent<NetworkBackend>
    /// The backend's capabilities, fixed per backend: kept here so the devices' per-frame
    /// checks do not retain the backend and call through its existential each time, and
    /// packed in one word so that reading them takes no lock.
    private let currentCapabilities: Atomic<UInt64>
    private let deviceLock: DeviceLock?
    private let loop: EventLoop?
    private let makeBackend: (@Sendable (inout DeviceOptions) throws -> NetworkBackend)?
    private let lastOffloads = Mutex<NetOffloads?>(nil)
    private let administrativelyUp = Atomic<Bool>(true)
    /// A `swap` is under way: the link reads down, so the device sees the cable pulled
    /// and plugged back whatever the two backends' own links say.
    private let swapping = Atomic<Bool>(false)
    /// The device, held strongly from `start` to `stop` (a cycle with the device, which
    /// owns this link, broken by `stop`): a frame reaches it with the lock held and no
    /// reference taken. Through a weak reference each frame cost ~30 ns more, a side-table
    /// retain and release (Docs/performance.md, in-memory item 5). Lock order: this, then
    /// the device's lock (a delivery waits for it while holding this).
    private let upstreamRef = Mutex(DeviceSlot())
    private var upstream: FrameReceiver? { upstreamRef.withLock { $0.device?.value } }
    /// `stop` found `upstreamRef` taken by a delivery: whoever holds it next lets go of
    /// the device (the delivery as it ends, or the loop), unless a
    /// `start` came first.
    private let releasePending = Atomic<Bool>(false)
    /// A capture started over the control socket (QMP `x-swiftvmm-capture-start`).
    private let capture = Mutex<PcapWriter?>(nil)
    private let clock: DeviceClock?
    /// Fault injection set over the control socket (QMP `x-swiftvmm-set-faults`): a
    /// filter between the device and the backend, changed only on the I/O loop under the
    /// device lock, like the backend itself.
    private let faults = Mutex<FaultFilter?>(nil)
    /// A fault filter or a capture is in place. Frames skip both locks while neither is
    /// (the usual case); changed only through `replaceFaults` and `replaceCapture`.
    private let interposed = Atomic<Bool>(false)
    /// Serializes those two, so the flag never ends up stale when the control socket
    /// and the I/O loop change them at once.
    private let interposerChange = Mutex(())
    private lazy var deviceSide = DeviceSide(link: self)

    /// - Parameters: the device's lock and loop, and how to open a backend from options
    ///   (`net=…`), for `swap`; without them the backend cannot be swapped.
    public init(wrapping inner: NetworkBackend, deviceLock: DeviceLock? = nil, loop: EventLoop? = nil, clock: DeviceClock? = nil,
                makeBackend: (@Sendable (inout DeviceOptions) throws -> NetworkBackend)? = nil) {
        current = Mutex(inner)
        sendingHolder = Lent(inner)
        sendingBackend = .passUnretained(sendingHolder)
        currentCapabilities = Atomic(inner.capabilities.packed)
        self.deviceLock = deviceLock; self.loop = loop; self.clock = clock; self.makeBackend = makeBackend
    }

    /// Replaces the backend with one opened from `options` (`net=tap:tap1`…) while the
    /// guest runs: the device sees a link flap; the old backend is stopped and closed
    /// (frames it held for the device are lost, as on a cable swap); the new one gets the
    /// receive offloads the guest accepted. Throws the new backend's option errors, leaving
    /// the old one in place.
    public func swap(options: DeviceOptions) throws {
        guard let makeBackend, let deviceLock, let loop else { throw LinkControlError.notControllable }
        var opts = options
        let fresh = try makeBackend(&opts)
        do { try opts.rejectUnknown() } catch { fresh.stop(); throw error }
        // Five seconds is far beyond one bounded device event; past it the loop is
        // stopping (the VM is shutting down) and the new backend is closed unused.
        do {
            try loop.runAndWait(timeout: 5, { [self] in
                deviceLock.withLock {
                    sendingHolder = Lent(fresh)
                    sendingBackend = .passUnretained(sendingHolder)
                    let old = current.withLock { c -> NetworkBackend in defer { c = fresh }; return c }
                    currentCapabilities.store(fresh.capabilities.packed, ordering: .releasing)
                    let receiver = upstream
                    swapping.store(true, ordering: .releasing)
                    receiver?.linkStateChanged(up: false)
                    // The old filter goes with the old backend, timers cancelled, as in `setFaults`.
                    let oldFilter = replaceFaults(nil)
                    oldFilter?.detach()
                    let config = oldFilter?.config
                    old.stop()
                    if let offloads = lastOffloads.withLock({ $0 }) { fresh.setReceiveOffloads(offloads) }
                    if let config { installFaults(config, in: fresh) }
                    fresh.start(receiver: self)
                    swapping.store(false, ordering: .releasing)
                    receiver?.linkStateChanged(up: isLinkUp)
                }
            })
        } catch {
            fresh.stop()
            throw LinkControlError.loopNotRunning
        }
    }

    /// Puts fault injection between the device and its backend (replacing any set
    /// before), or takes it out with nil; frames it held are lost. Live on a running guest.
    public func setFaults(_ config: FaultConfig?) throws {
        guard let deviceLock, let loop, clock != nil else { throw LinkControlError.notControllable }
        do {
            try loop.runAndWait(timeout: 5, { [self] in
                deviceLock.withLock {
                    replaceFaults(nil)?.detach()
                    if let config, config.isActive { installFaults(config, in: inner) }
                }
            })
        } catch {
            throw LinkControlError.loopNotRunning
        }
    }

    /// The fault filter in place, for counters.
    public var faultFilter: FaultFilter? { faults.withLock { $0 } }

    private func installFaults(_ config: FaultConfig, in backend: NetworkBackend) {
        guard let loop, let clock else { return }
        let filter = FaultFilter(wrapping: backend, config: config, eventLoop: loop, clock: clock)
        filter.attach(upstream: deviceSide)
        replaceFaults(filter)
    }

    /// Sets the fault filter and returns the one it replaces.
    @discardableResult
    private func replaceFaults(_ filter: FaultFilter?) -> FaultFilter? {
        interposerChange.withLock { _ in
            let previous = faults.withLock { f -> FaultFilter? in defer { f = filter }; return f }
            updateInterposed()
            return previous
        }
    }

    /// Sets the capture and returns the one it replaces.
    private func replaceCapture(_ writer: PcapWriter?) -> PcapWriter? {
        interposerChange.withLock { _ in
            let previous = capture.withLock { c -> PcapWriter? in defer { c = writer }; return c }
            updateInterposed()
            return previous
        }
    }

    private func updateInterposed() {
        let any = faults.withLock { $0 != nil } || capture.withLock { $0 != nil }
        interposed.store(any, ordering: .releasing)
    }

    /// The device's receive filter, as its guest driver set it; nil when the device does
    /// not report one.
    public var receiveFilter: ReceiveFilterInfo? {
        guard let device = upstream as? ReceiveFilterReporting else { return nil }
        return deviceLock.map { lock in lock.withLock { device.receiveFilter } } ?? device.receiveFilter
    }

    /// Told when the guest changes the receive filter (set by `NetworkLinks`).
    private let filterChangeHandler = Mutex<(@Sendable () -> Void)?>(nil)
    public func onReceiveFilterChanged(_ handler: (@Sendable () -> Void)?) { filterChangeHandler.withLock { $0 = handler } }
    func noteReceiveFilterChanged() { filterChangeHandler.withLock { $0 }?() }

    public var description: String { inner.description }
    public var capabilities: BackendCapabilities { BackendCapabilities(packed: currentCapabilities.load(ordering: .acquiring)) }
    public var isLinkUp: Bool {
        administrativelyUp.load(ordering: .acquiring) && !swapping.load(ordering: .acquiring) && inner.isLinkUp
    }
    public var counters: BackendCounters { inner.counters }
    public var isAdministrativelyUp: Bool { administrativelyUp.load(ordering: .acquiring) }

    /// Sets the administrative link. The device is told every time and reads `isLinkUp`
    /// to see whether anything changed: deciding here from a before/after comparison could
    /// find both equal while the backend's own change, on the I/O loop, was being reported
    /// with a value this store has already made stale, leaving the device wrong for good.
    public func setLink(up: Bool) {
        administrativelyUp.store(up, ordering: .releasing)
        upstream?.linkStateChanged(up: isLinkUp)
        if up { inner.resumeReceive() }
    }

    /// Starts recording every frame this NIC sends or receives to a pcap file at `path`.
    public func startCapture(path: String) throws(PcapError) {
        let writer = try PcapWriter(path: path)
        try? replaceCapture(writer)?.close()
    }

    /// Stops a capture; false when none was running.
    @discardableResult
    public func stopCapture() -> Bool {
        guard let writer = replaceCapture(nil) else { return false }
        try? writer.close()
        return true
    }

    public var capturePath: String? { capture.withLock { $0?.path } }

    public func start(receiver: FrameReceiver) {
        upstreamRef.withLock {
            releasePending.store(false, ordering: .relaxed)
            $0.device = Lent(receiver)
        }
        inner.start(receiver: self)
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard isAdministrativelyUp else {
            counters.dropped(.linkDown)
            return .dropped(.linkDown)
        }
        guard interposed.load(ordering: .acquiring) else {
            return sendingBackend._withUnsafeGuaranteedRef { $0.value.send(segments, header: header) }
        }
        let result = faults.withLock({ $0 })?.send(segments, header: header)
            ?? sendingBackend._withUnsafeGuaranteedRef { $0.value.send(segments, header: header) }
        if result == .sent, let writer = capture.withLock({ $0 }) { writer.write(segments) }
        return result
    }

    public func resumeReceive() {
        if let filter = faults.withLock({ $0 }) { filter.resumeReceive() } else { inner.resumeReceive() }
    }
    public func setReceiveOffloads(_ offloads: NetOffloads) {
        lastOffloads.withLock { $0 = offloads }
        inner.setReceiveOffloads(offloads)
    }
    public func stop() {
        stopCapture()
        replaceFaults(nil)?.detach()
        inner.stop()
        releaseDevice()
    }

    /// Lets go of the device. `stop` runs with the device lock held (the device's
    /// `shutdown`), and a delivery holds `upstreamRef` while it waits for that lock: never
    /// wait here. If a delivery is under way, it lets go as it ends
    /// (`releaseIfPending`), or else the loop does.
    private func releaseDevice() {
        // Pending before the try: a delivery that ends between a failed try and this store
        // would see nothing to do, and a `start` right after it would then have its new
        // device let go by the loop.
        releasePending.store(true, ordering: .releasing)
        guard upstreamRef.withLockIfAvailable({ slot in releaseIfPending(&slot) }) == nil else { return }
        loop?.execute { [self] in upstreamRef.withLock { releaseIfPending(&$0) } }
    }

    /// With `upstreamRef` held: completes a release `stop` could not make.
    private func releaseIfPending(_ slot: inout DeviceSlot) {
        guard releasePending.load(ordering: .acquiring), releasePending.exchange(false, ordering: .acquiring) else { return }
        slot.device = nil
    }

    public func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        guard isAdministrativelyUp else {   // the cable is out: the frames are lost, and counted
            counters.dropped(.linkDown, count: frames.count)
            return frames.count
        }
        if interposed.load(ordering: .acquiring), let filter = faults.withLock({ $0 }) { return filter.receive(frames) }
        return deliverToDevice(frames)
    }

    /// Frames reach the device (from the backend, or out of the fault filter), all of them
    /// under one hold of `upstreamRef`: `stop` finds it taken and lets go of the device as
    /// the delivery ends.
    fileprivate func deliverToDevice(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        // Without a device (stopped) the frames are dropped, as on a cable with no NIC.
        guard let accepted = upstreamRef.withLock({ slot in
            defer { releaseIfPending(&slot) }
            return slot.lent?._withUnsafeGuaranteedRef { $0.value.receive(frames) }
        }) else {
            counters.dropped(.linkDown, count: frames.count)
            return frames.count
        }
        if accepted > 0, interposed.load(ordering: .acquiring), let writer = capture.withLock({ $0 }) {
            for frame in frames.prefix(accepted) { writer.write(frame.bytes) }
        }
        return accepted
    }

    /// The backend's link changed: the device hears of it with the link it sees (down
    /// while the cable is administratively out).
    public func linkStateChanged(up _: Bool) {
        upstream?.linkStateChanged(up: isLinkUp)
    }
}

/// A reference in a box that the link lends without counting it (the backend devices
/// send to, the device frames go to): borrowed through `Unmanaged`, a call through the
/// box's constant costs no retain, where a call through an existential stored in the
/// link (or in a box read out of a lock) retained and released it each time.
private final class Lent<Value: Sendable>: Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The device the link holds from `start` to `stop`, and the same box unretained, which
/// deliveries borrow: calling through the box read out of the slot retained the device
/// on every frame (on the e1000, whose weak references send its counts down the slow
/// path, a quarter of its receive in memory).
private struct DeviceSlot: @unchecked Sendable {
    var device: Lent<FrameReceiver>? {
        didSet { lent = device.map { .passUnretained($0) } }
    }
    private(set) var lent: Unmanaged<Lent<FrameReceiver>>?
}

/// The device as the fault filter's upstream: frames it lets through reach the device
/// through the link (and its capture).
private final class DeviceSide: FrameReceiver, @unchecked Sendable {
    weak var link: LinkControl?
    init(link: LinkControl) { self.link = link }
    func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        link?.deliverToDevice(frames) ?? frames.count
    }
    func linkStateChanged(up: Bool) { link?.linkStateChanged(up: up) }
}

public enum LinkControlError: Error, CustomStringConvertible {
    case notControllable
    case loopNotRunning
    public var description: String {
        switch self {
        case .notControllable: "this NIC has no live control (it was made without the machine's I/O loop and clock)"
        case .loopNotRunning: "the VM's I/O loop is not running (is it stopping?); nothing was changed"
        }
    }
}

/// The NICs of a machine by control name (`id=`, else `devN`), for the control socket.
/// Registered in the machine's `ServiceRegistry`; NICs register as they open backends.
///
/// Receive-filter changes are reported QEMU's way: once per NIC, and again only after the
/// client asked for the filter (`query-rx-filter` calls `receiveFilterQueried`), so a
/// guest that rewrites its filter in a loop cannot flood the client.
public final class NetworkLinks: @unchecked Sendable {
    private let links = Mutex<[(name: String, link: LinkControl)]>([])
    private let quietNames = Mutex<Set<String>>([])
    private let listener = Mutex<(@Sendable (String) -> Void)?>(nil)
    public init() {}
    public func register(_ name: String, _ link: LinkControl) {
        links.withLock { $0.append((name, link)) }
        link.onReceiveFilterChanged { [weak self] in self?.filterChanged(name) }
    }

    /// Who hears of receive-filter changes (the control socket).
    public func onReceiveFilterChanged(_ handler: (@Sendable (String) -> Void)?) { listener.withLock { $0 = handler } }

    /// The client read `name`'s filter: its next change is reported again.
    public func receiveFilterQueried(_ name: String) { _ = quietNames.withLock { $0.remove(name) } }

    private func filterChanged(_ name: String) {
        let report = quietNames.withLock { $0.insert(name).inserted }
        if report { listener.withLock { $0 }?(name) }
    }
    public func link(named name: String) -> LinkControl? { links.withLock { l in l.first { $0.name == name }?.link } }
    public var all: [(name: String, link: LinkControl)] { links.withLock { $0 } }
}

private extension BackendCapabilities {
    /// maxFrameSize in the low 32 bits (clamped: backends' limits are constants well
    /// below), the offloads in the next 31, the header flag in the top bit.
    var packed: UInt64 {
        UInt64(UInt32(clamping: max(0, maxFrameSize))) | UInt64(offloads.rawValue & 0x7FFF_FFFF) << 32 | (virtioNetHeader ? 1 << 63 : 0)
    }

    init(packed: UInt64) {
        self.init(virtioNetHeader: packed >> 63 != 0,
                  offloads: NetOffloads(rawValue: UInt32(truncatingIfNeeded: packed >> 32) & 0x7FFF_FFFF),
                  maxFrameSize: Int(UInt32(truncatingIfNeeded: packed)))
    }
}
