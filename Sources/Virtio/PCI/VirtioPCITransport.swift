import VMMCore

/// Identity of a modern virtio PCI function (virtio 1.2 §4.1.2): vendor 0x1AF4, device
/// 0x1040 + the virtio device type, revision 1 (a modern-only, non-transitional device).
public struct VirtioPCIIdentity: Sendable {
    public var deviceType: UInt16
    public var classCode: UInt32
    public init(deviceType: UInt16, classCode: UInt32) {
        self.deviceType = deviceType
        self.classCode = classCode
    }
}

/// The modern virtio-pci transport (virtio 1.2 §4.1), the same for every device type:
/// vendor capabilities for common/notify/ISR/device configuration (and the PCI_CFG
/// window) in one 64-bit memory BAR, 64-bit feature negotiation, the device status state
/// machine, per-queue setup of split or packed virtqueues, queue notifications as
/// doorbells (so KVM can use an ioeventfd), and interrupts: MSI-X per queue and for config
/// changes, or INTx with the ISR status register when MSI-X is off.
///
/// `VirtioPCIDevice` owns it and forwards the function's accesses; the device type sees
/// it only as `VirtioTransport`. All calls happen under the device's lock.
public final class VirtioPCITransport: VirtioTransport, @unchecked Sendable {
    /// One queue: its registers as the driver programmed them and, once enabled, its ring
    /// in the layout the driver negotiated.
    struct QueueState {
        var configuration: VirtqueueConfiguration
        /// The ring once the driver enabled the queue.
        var ring: (any TransportRing)? {
            didSet { unretained = ring.flatMap(UnretainedRing.init) }
        }
        /// The same ring, unretained, for `withQueue`; valid while `ring` holds it.
        private(set) var unretained: UnretainedRing?

        init(configuration: VirtqueueConfiguration) { self.configuration = configuration }
    }

    public private(set) var status = VirtioDeviceStatus()
    /// A driver's reset (status 0) waits for the device to drain; the status read back meanwhile.
    private var resetInProgress: VirtioDeviceStatus?
    /// Features the driver accepted; valid once FEATURES_OK is set.
    public private(set) var negotiatedFeatures: UInt64 = 0
    public private(set) var offeredFeatures: UInt64 = 0
    private(set) var queues: [QueueState] = []

    /// The device type; weak because the device's owner (`VirtioPCIDevice`) holds it.
    private weak var device: VirtioDevice?
    private var deviceConfigLength = 0
    private let context: PCIDeviceContext
    private var deviceFeatureSelect: UInt32 = 0
    private var driverFeatureSelect: UInt32 = 0
    private var driverFeatures: UInt64 = 0
    private var configVector: UInt16 = virtioNoVector
    private var configGeneration: UInt8 = 0
    private var queueSelect: UInt16 = 0
    private var isr: UInt8 = 0
    private var msixVectors = 1
    private var configWindow: VirtioPCIConfigWindow?

    /// The transport exists before the device (which keeps it as its `VirtioTransport`);
    /// `attach` then builds the function for the device's layout.
    init(context: PCIDeviceContext) {
        self.context = context
    }

    /// Builds the function in the device's config space: identity, the BAR and its
    /// capabilities, MSI-X with one vector per queue plus one for config changes, and a
    /// doorbell per queue.
    func attach(_ device: VirtioDevice, identity: VirtioPCIIdentity) {
        self.device = device
        let layout = device.layout
        deviceConfigLength = max(0, min(layout.configLength, Int(VirtioPCILayout.deviceConfigMaxLength)))
        let count = min(max(layout.queueCount, 1), VirtioPCILayout.maxQueues)
        queues = Array(repeating: QueueState(configuration: VirtqueueConfiguration(maxSize: layout.maxQueueSize)), count: count)
        // A pop walks a whole chain, up to 1,024 descriptors, past the deferral point.
        context.cost.budget = ActionCostMeter.budget(unitDescriptors: SplitVirtqueue.maxChainDescriptors)
        var features = (layout.features & ~VirtioFeature.transportBits) | VirtioFeature.version1
        if layout.ring.eventIndex { features |= VirtioFeature.eventIndex }
        if layout.ring.indirectDescriptors { features |= VirtioFeature.indirectDescriptors }
        if layout.ring.packedRing { features |= VirtioFeature.ringPacked }
        offeredFeatures = features
        msixVectors = count + 1

        let config = context.config
        config.setIdentity(PCIIdentity(vendorID: 0x1AF4, deviceID: 0x1040 &+ identity.deviceType,
                                       subsystemVendorID: 0x1AF4, subsystemID: 0x1100,
                                       revision: 1, classCode: identity.classCode))
        config.declareBAR(VirtioPCILayout.bar, .memory64(size: VirtioPCILayout.barSize))
        let bar = VirtioPCILayout.bar
        config.addVirtioCapability(.common, bar: bar, offset: VirtioPCILayout.commonOffset, length: VirtioPCILayout.commonLength)
        let multiplier = VirtioPCILayout.notifyOffMultiplier
        config.addVirtioCapability(.notify, bar: bar, offset: VirtioPCILayout.notifyOffset,
                                   length: UInt64(count) * UInt64(multiplier),
                                   extra: (0 ..< 4).map { UInt8(truncatingIfNeeded: multiplier >> (8 * UInt32($0))) })
        config.addVirtioCapability(.isr, bar: bar, offset: VirtioPCILayout.isrOffset, length: VirtioPCILayout.isrLength)
        if deviceConfigLength > 0 {
            config.addVirtioCapability(.device, bar: bar, offset: VirtioPCILayout.deviceConfigOffset,
                                       length: UInt64(deviceConfigLength))
        }
        if let window = config.addVirtioCapability(.pciConfigAccess, bar: 0, offset: 0, length: 0, extra: [0, 0, 0, 0],
                                                   writeMask: VirtioPCIConfigWindow.writeMask) {
            configWindow = VirtioPCIConfigWindow(capability: window)
        }
        context.interrupts.useINTx()
        context.interrupts.addMSIX(vectors: msixVectors, tableBAR: bar, tableOffset: VirtioPCILayout.msixTableOffset,
                                   pbaBAR: bar, pbaOffset: VirtioPCILayout.msixPBAOffset)
        // Queue notifications as doorbells: under KVM an ioeventfd runs the handler on the
        // I/O loop without a vCPU exit; elsewhere barWrite sees the same write.
        for q in 0 ..< count {
            let offset = VirtioPCILayout.notifyOffset + UInt64(q) * UInt64(multiplier)
            context.doorbells.register(bar: bar, offset: offset, size: 2) { [weak self] in
                guard let self else { return }
                self.context.lock.withLock { self.queueNotified(q) }
            }
        }
    }

    // MARK: What devices use

    /// DRIVER_OK is set, the device is neither broken nor failed, and bus mastering is on
    /// (a function without it cannot reach memory, PCI 3.0 §6.2.2): queues may be used.
    public var isLive: Bool {
        status.contains(.driverOK) && !status.contains(.needsReset) && !status.contains(.failed)
            && context.config.busMasterEnabled
    }

    /// The ring is kept as the existential devices use, so this returns it with one
    /// retain (an enum of the two ring classes cost two more retains and a release per
    /// call, ~5 % of a virtio-net receive).
    public func queue(_ index: Int) -> (any Virtqueue)? {
        guard index >= 0, index < queues.count, let ring = queues[index].ring, ring.isEnabled else { return nil }
        return ring
    }

    /// The ring lent unretained: no reference is counted, where `queue` retained and
    /// released it once per received frame (13 % of a 1514-byte virtio-net receive in
    /// memory, an atomic add and subtract). `queues[index].ring` keeps it alive until a
    /// reset or a new enable replaces it, and neither can happen inside `body` (both are
    /// driver register writes, under the same lock).
    public func withQueue<State, R>(_ index: Int, _ state: inout State, _ body: (any Virtqueue, inout State) -> R) -> R? {
        guard index >= 0, index < queues.count, let ring = queues[index].unretained else { return nil }
        switch ring {
        case let .split(q): return q._withUnsafeGuaranteedRef { $0.isEnabled ? body($0, &state) : nil }
        case let .packed(q): return q._withUnsafeGuaranteedRef { $0.isEnabled ? body($0, &state) : nil }
        }
    }

    /// Publishes what was added to `queue`'s used ring and interrupts the driver if it
    /// asked for it (§2.7.10). The one call devices make after returning buffers.
    public func completeUsed(_ queue: any Virtqueue) {
        let published = queue.pendingUsed > 0
        queue.publishUsed()
        guard published, queue.needsNotification() else { return }
        signalQueue(queue)
    }

    /// A used-buffer notification for `queue`: its MSI-X vector, or ISR bit 0 and INTx.
    public func signalQueue(_ queue: any Virtqueue) {
        if context.interrupts.mode == .msix {
            let vector = queue.index < queues.count ? queues[queue.index].configuration.msixVector : virtioNoVector
            if vector != virtioNoVector { context.interrupts.raise(vector: Int(vector)) }
        } else {
            isr |= VirtioISR.queue
            context.interrupts.setINTx(true)
        }
    }

    /// The device configuration changed (link status…): bump the generation (§4.1.4.3.1)
    /// and, once the driver is running, send a configuration change notification.
    public func configurationChanged() {
        configGeneration &+= 1
        guard status.contains(.driverOK) else { return }
        signalConfigChange()
    }

    private func signalConfigChange() {
        if context.interrupts.mode == .msix {
            if configVector != virtioNoVector { context.interrupts.raise(vector: Int(configVector)) }
        } else {
            isr |= VirtioISR.configChange
            context.interrupts.setINTx(true)
        }
    }

    /// Puts the device into DEVICE_NEEDS_RESET after the driver broke the rules (§2.1.1):
    /// queues stop, the driver gets a config interrupt and must reset the device.
    public func fail(_ queue: (any Virtqueue)?, _ error: VirtqueueError) {
        enterNeedsReset(queue.map { "queue \($0.index)" } ?? "device", error)
    }

    private func enterNeedsReset(_ name: String, _ error: VirtqueueError) {
        context.guestLog.warning("virtio.needs-reset", "\(name): \(error); DEVICE_NEEDS_RESET set")
        for q in queues { q.ring?.disable() }
        guard !status.contains(.needsReset) else { return }
        status.insert(.needsReset)
        if status.contains(.driverOK) { signalConfigChange() }
    }

    /// Device reset (status 0, §2.1; or a machine reset).
    public func reset() {
        resetInProgress = nil
        status = []
        negotiatedFeatures = 0
        driverFeatures = 0
        deviceFeatureSelect = 0
        driverFeatureSelect = 0
        configVector = virtioNoVector
        queueSelect = 0
        isr = 0
        context.interrupts.setINTx(false)
        for i in queues.indices {
            // A ring someone still holds must not write used entries into the memory of
            // the driver's next setup.
            queues[i].ring?.disable()
            queues[i] = QueueState(configuration: VirtqueueConfiguration(maxSize: queues[i].configuration.maxSize))
        }
        device?.reset()
    }

    // MARK: Notifications

    private func queueNotified(_ index: Int) {
        guard isLive, queue(index) != nil else { return }
        device?.queueNotified(index)
    }

    // MARK: BAR access (forwarded by the device)

    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar == VirtioPCILayout.bar else { return 0 }
        if let o = offset.within(VirtioPCILayout.commonOffset, VirtioPCILayout.commonLength, size) {
            return commonRead(o, size: size)
        }
        if offset == VirtioPCILayout.isrOffset {
            // Reading ISR acknowledges it and lowers INTx (§4.1.4.5).
            let v = isr
            isr = 0
            context.interrupts.setINTx(false)
            return UInt64(v)
        }
        if let o = offset.within(VirtioPCILayout.deviceConfigOffset, UInt64(deviceConfigLength), size) {
            return device?.readConfig(offset: Int(o), size: size) ?? 0
        }
        return 0
    }

    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == VirtioPCILayout.bar else { return }
        if let o = offset.within(VirtioPCILayout.commonOffset, VirtioPCILayout.commonLength, size) {
            commonWrite(o, size: size, value: value)
        } else if let o = offset.within(VirtioPCILayout.notifyOffset, UInt64(queues.count) * UInt64(VirtioPCILayout.notifyOffMultiplier), size) {
            queueNotified(Int(o / UInt64(VirtioPCILayout.notifyOffMultiplier)))
        } else if let o = offset.within(VirtioPCILayout.deviceConfigOffset, UInt64(deviceConfigLength), size) {
            device?.writeConfig(offset: Int(o), size: size, value: value)
        } else {
            context.guestLog.debug("virtio.bar-write", "ignored write of \(size) bytes at BAR\(bar)+0x\(String(offset, radix: 16))")
        }
    }

    // MARK: PCI_CFG window (forwarded by the device)

    // §4.1.4.9.1: a read of pci_cfg_data reads cap.length bytes at cap.offset of cap.bar
    // into pci_cfg_data; a write of it writes the first cap.length bytes of pci_cfg_data
    // there. Both go through the window itself, so an access of another width than
    // cap.length reads or writes what the window holds (as Linux's lguest launcher does).
    // The window reaches the whole BAR, the MSI-X table and PBA (the core's) included, as
    // an access on the bus would.

    public func configRead(offset: Int, size: Int) -> UInt32? {
        guard let w = configWindow, w.dataRange.contains(offset) else { return nil }
        if let t = w.target(in: context.config) {
            let v = context.interrupts.msixRead(bar: t.bar, offset: t.offset, size: t.size) ?? barRead(t.bar, offset: t.offset, size: t.size)
            context.config.write(offset: w.dataRange.lowerBound, size: t.size, value: UInt32(truncatingIfNeeded: v))
        }
        return context.config.read(offset: offset, size: size)
    }

    public func configWrite(offset: Int, size: Int, value: UInt32) -> Bool {
        guard let w = configWindow, w.dataRange.contains(offset) else { return false }
        context.config.write(offset: offset, size: size, value: value)
        if let t = w.target(in: context.config) {
            let data = context.config.read(offset: w.dataRange.lowerBound, size: t.size)
            if !context.interrupts.msixWrite(bar: t.bar, offset: t.offset, size: t.size, value: UInt64(data)) {
                barWrite(t.bar, offset: t.offset, size: t.size, value: UInt64(data))
            }
        }
        return true
    }

    // MARK: Common configuration (§4.1.4.3)

    private var selected: Int? { Int(queueSelect) < queues.count ? Int(queueSelect) : nil }

    private func commonRead(_ o: UInt64, size: Int) -> UInt64 {
        typealias C = VirtioCommonConfig
        let q = selected.map { queues[$0].configuration }
        switch (o, size) {
        case (C.deviceFeatureSelect, 4): return UInt64(deviceFeatureSelect)
        case (C.deviceFeature, 4): return featureWord(offeredFeatures, deviceFeatureSelect)
        case (C.driverFeatureSelect, 4): return UInt64(driverFeatureSelect)
        case (C.driverFeature, 4): return featureWord(driverFeatures, driverFeatureSelect)
        case (C.configMSIXVector, 2): return UInt64(configVector)
        case (C.numQueues, 2): return UInt64(queues.count)
        case (C.deviceStatus, 1): return UInt64(reportedStatus.rawValue)
        case (C.configGeneration, 1): return UInt64(configGeneration)
        case (C.queueSelect, 2): return UInt64(queueSelect)
        case (C.queueSize, 2): return UInt64(q?.size ?? 0)
        case (C.queueMSIXVector, 2): return UInt64(q?.msixVector ?? virtioNoVector)
        case (C.queueEnable, 2): return selected.flatMap { queues[$0].ring } != nil ? 1 : 0
        case (C.queueNotifyOff, 2), (C.queueNotifyConfigData, 2): return UInt64(q == nil ? 0 : queueSelect)
        case (C.queueDescriptor, _), (C.queueDescriptor + 4, 4):
            return addressPart(q?.descriptorArea, o - C.queueDescriptor, size)
        case (C.queueDriver, _), (C.queueDriver + 4, 4):
            return addressPart(q?.driverArea, o - C.queueDriver, size)
        case (C.queueDevice, _), (C.queueDevice + 4, 4):
            return addressPart(q?.deviceArea, o - C.queueDevice, size)
        case (C.queueReset, 2): return 0
        default:
            context.guestLog.debug("virtio.common-read", "read of \(size) bytes at common+0x\(String(o, radix: 16))")
            return 0
        }
    }

    private func commonWrite(_ o: UInt64, size: Int, value: UInt64) {
        typealias C = VirtioCommonConfig
        let v32 = UInt32(truncatingIfNeeded: value), v16 = UInt16(truncatingIfNeeded: value)
        switch (o, size) {
        case (C.deviceFeatureSelect, 4): deviceFeatureSelect = v32
        case (C.driverFeatureSelect, 4): driverFeatureSelect = v32
        case (C.driverFeature, 4):
            // Features are fixed once FEATURES_OK is accepted (§3.1.1).
            guard !status.contains(.featuresOK), driverFeatureSelect < 2 else { return }
            let shift = UInt64(driverFeatureSelect) * 32
            driverFeatures = (driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(v32) << shift)
        case (C.configMSIXVector, 2): configVector = validVector(v16)
        case (C.deviceStatus, 1): writeStatus(UInt8(truncatingIfNeeded: value))
        case (C.queueSelect, 2): queueSelect = v16
        case (C.queueMSIXVector, 2):
            if let i = selected { queues[i].configuration.msixVector = validVector(v16) }
        case (C.queueSize, 2):
            guard let i = configurableQueue() else { return }
            queues[i].configuration.size = v16
        case (C.queueEnable, 2):
            guard v16 == 1, let i = configurableQueue() else { return }
            // The ring's layout (split or packed, EVENT_IDX, indirect) is the negotiated
            // one, so it exists only once features are (§3.1.1: queues are set up in step
            // 7, after FEATURES_OK in step 5; Linux's virtio_dev_probe agrees).
            guard status.contains(.featuresOK) else {
                context.guestLog.warning("virtio.queue-enable", "queue \(i) enabled before FEATURES_OK; ignored")
                return
            }
            enable(i)
        case (C.queueDescriptor, _), (C.queueDescriptor + 4, 4):
            guard let i = configurableQueue() else { return }
            let a = queues[i].configuration.descriptorArea.raw
            queues[i].configuration.descriptorArea = GuestAddress(merge(a, o - C.queueDescriptor, size, value))
        case (C.queueDriver, _), (C.queueDriver + 4, 4):
            guard let i = configurableQueue() else { return }
            let a = queues[i].configuration.driverArea.raw
            queues[i].configuration.driverArea = GuestAddress(merge(a, o - C.queueDriver, size, value))
        case (C.queueDevice, _), (C.queueDevice + 4, 4):
            guard let i = configurableQueue() else { return }
            let a = queues[i].configuration.deviceArea.raw
            queues[i].configuration.deviceArea = GuestAddress(merge(a, o - C.queueDevice, size, value))
        default:
            context.guestLog.debug("virtio.common-write", "ignored write of \(size) bytes at common+0x\(String(o, radix: 16))")
        }
    }

    /// Builds queue `i`'s ring in the negotiated layout from its registers.
    private func enable(_ i: Int) {
        let features = VirtqueueConfiguration.RingFeatures(eventIndex: negotiated(VirtioFeature.eventIndex),
                                                          indirectDescriptors: negotiated(VirtioFeature.indirectDescriptors))
        let configuration = queues[i].configuration
        do {
            if negotiated(VirtioFeature.ringPacked) {
                queues[i].ring = try PackedVirtqueue(index: i, configuration: configuration, features: features, memory: context.memory)
            } else {
                queues[i].ring = try SplitVirtqueue(index: i, configuration: configuration, features: features, memory: context.memory)
            }
        } catch {
            enterNeedsReset("queue \(i)", error)
        }
    }

    /// The selected queue while its setup may still change: it exists, is not enabled yet
    /// and the device is not live (§4.1.4.3.2: no changes after queue_enable).
    private func configurableQueue() -> Int? {
        guard let i = selected, queues[i].ring == nil, !status.contains(.driverOK), !status.contains(.needsReset) else {
            context.guestLog.debug("virtio.queue-locked", "queue \(queueSelect) cannot be configured now")
            return nil
        }
        return i
    }

    /// A vector the MSI-X table has, else NO_VECTOR, which the driver reads back as
    /// "could not map" (§4.1.4.3.1).
    private func validVector(_ v: UInt16) -> UInt16 { Int(v) < msixVectors ? v : virtioNoVector }

    private func featureWord(_ features: UInt64, _ select: UInt32) -> UInt64 {
        select < 2 ? (features >> (UInt64(select) * 32)) & 0xFFFF_FFFF : 0
    }

    private func addressPart(_ address: GuestAddress?, _ part: UInt64, _ size: Int) -> UInt64 {
        guard let a = address?.raw else { return 0 }
        switch (part, size) {
        case (0, 8): return a
        case (0, 4): return a & 0xFFFF_FFFF
        case (4, 4): return a >> 32
        default: return 0
        }
    }

    /// Merges a 4- or 8-byte write into a 64-bit queue address; drivers write the halves
    /// separately (Linux's vp_iowrite64_twopart).
    private func merge(_ old: UInt64, _ part: UInt64, _ size: Int, _ value: UInt64) -> UInt64 {
        switch (part, size) {
        case (0, 8): return value
        case (0, 4): return (old & 0xFFFF_FFFF_0000_0000) | (value & 0xFFFF_FFFF)
        case (4, 4): return (old & 0xFFFF_FFFF) | (value << 32)
        default: return old
        }
    }

    // MARK: Device status (§2.1, §3.1.1)

    /// The status the driver reads: until the device has drained what it was doing before
    /// a driver's reset (`VirtioDevice.isDraining`), the status from before it, so that the
    /// driver keeps polling for 0 (Linux's `vp_reset`) before it reuses its buffers.
    private var reportedStatus: VirtioDeviceStatus {
        if let before = resetInProgress {
            if device?.isDraining == true { return before }
            resetInProgress = nil
        }
        return status
    }

    private func writeStatus(_ value: UInt8) {
        if resetInProgress != nil, value != 0 {
            if device?.isDraining == true {
                context.guestLog.warning("virtio.reset-pending", "status 0x\(String(value, radix: 16)) written before the reset completed (status read back 0); ignored")
                return
            }
            resetInProgress = nil
        }
        if value == 0 {
            let before = status.isEmpty ? VirtioDeviceStatus.acknowledge : status
            reset()
            if device?.isDraining == true { resetInProgress = before }
            return
        }
        var requested = VirtioDeviceStatus(rawValue: value)
        requested.remove(.needsReset) // only the device sets it
        let current = status.subtracting(.needsReset)
        guard requested.isSuperset(of: current) else {
            context.guestLog.warning("virtio.status-clear", "driver tried to clear status bits (0x\(String(status.rawValue, radix: 16)) → 0x\(String(value, radix: 16))); ignored")
            return
        }
        let added = requested.subtracting(current)
        if added.contains(.featuresOK) && !featuresAcceptable() {
            // The driver reads FEATURES_OK back and sees it refused (§3.1.1 step 6).
            requested.remove(.featuresOK)
        }
        if added.contains(.driverOK) && !requested.contains(.featuresOK) {
            context.guestLog.warning("virtio.driver-ok", "DRIVER_OK without FEATURES_OK; ignored")
            requested.remove(.driverOK)
        }
        status = requested.union(status.intersection(.needsReset))
        if added.contains(.featuresOK) && status.contains(.featuresOK) {
            negotiatedFeatures = driverFeatures
        }
        if added.contains(.driverOK) && status.contains(.driverOK) && !status.contains(.needsReset) && !status.contains(.failed) {
            device?.activate()
        }
    }

    private func featuresAcceptable() -> Bool {
        let unoffered = driverFeatures & ~offeredFeatures
        guard unoffered == 0 else {
            context.guestLog.warning("virtio.features", "driver accepted features 0x\(String(unoffered, radix: 16)) that were not offered")
            return false
        }
        guard VirtioFeature.has(driverFeatures, VirtioFeature.version1) else {
            context.guestLog.warning("virtio.features", "driver did not accept VIRTIO_F_VERSION_1 (this device is modern-only)")
            return false
        }
        return device?.acceptsFeatures(driverFeatures) ?? false
    }
}

extension UInt64 {
    /// `self - base` when an access of `size` bytes at `self` lies inside `[base, base+length)`.
    func within(_ base: UInt64, _ length: UInt64, _ size: Int) -> UInt64? {
        guard self >= base else { return nil }
        let o = self - base
        guard o < length, UInt64(size) <= length - o else { return nil }
        return o
    }
}

/// An enabled queue's ring as its concrete class, unretained, so that the transport can
/// lend it without counting a reference (`withQueue`): borrowed through an existential
/// field, it was still retained.
enum UnretainedRing {
    case split(Unmanaged<SplitVirtqueue>)
    case packed(Unmanaged<PackedVirtqueue>)

    init?(_ ring: any TransportRing) {
        if let q = ring as? SplitVirtqueue { self = .split(.passUnretained(q)) }
        else if let q = ring as? PackedVirtqueue { self = .packed(.passUnretained(q)) }
        else { return nil }
    }
}
