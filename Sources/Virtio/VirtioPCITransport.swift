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

/// Ring features a user may switch (`event_idx=off`, `indirect_desc=off`, `packed=on`).
public struct VirtioTransportOptions: Sendable {
    public var eventIndex = true
    public var indirectDescriptors = true
    /// Offer VIRTIO_F_RING_PACKED (off by default, as in QEMU: split rings are what every
    /// driver supports and what is tested most).
    public var packedRing = false
    public init(eventIndex: Bool = true, indirectDescriptors: Bool = true, packedRing: Bool = false) {
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.packedRing = packedRing
    }
}

/// The modern virtio-pci transport (virtio 1.2 §4.1), reusable by any device type:
/// vendor capabilities for common/notify/ISR/device configuration (and the PCI_CFG
/// window) in one 64-bit memory BAR, 64-bit feature negotiation, the device status state
/// machine, per-queue setup of split virtqueues, queue notifications as doorbells (so
/// KVM can use an ioeventfd), and interrupts: MSI-X per queue and for config changes, or
/// INTx with the ISR status register when MSI-X is off.
///
/// The owning `PCIDevice` forwards `barRead`/`barWrite`/`configRead`/`configWrite`/
/// `reset` here. All calls happen under the device's lock.
public final class VirtioPCITransport: @unchecked Sendable {
    /// Each queue's registers as the driver programmed them, and its split ring.
    public let queues: [SplitVirtqueue]
    /// The packed ring of each queue, used instead when VIRTIO_F_RING_PACKED is negotiated.
    public let packedQueues: [PackedVirtqueue]
    public private(set) var status = VirtioDeviceStatus()
    /// Features the driver accepted; valid once FEATURES_OK is set.
    public private(set) var negotiatedFeatures: UInt64 = 0
    public let offeredFeatures: UInt64

    /// The device type's behaviour; set by the device at the end of its `init` (the
    /// transport is created first, so the device can keep it in a `let`).
    public weak var model: VirtioDeviceModel?
    private let deviceConfigLength: Int
    private let context: PCIDeviceContext
    private var deviceFeatureSelect: UInt32 = 0
    private var driverFeatureSelect: UInt32 = 0
    private var driverFeatures: UInt64 = 0
    private var configVector: UInt16 = virtioNoVector
    private var configGeneration: UInt8 = 0
    private var queueSelect: UInt16 = 0
    private var isr: UInt8 = 0
    private let msixVectors: Int
    private var configWindow: VirtioPCIConfigWindow?

    /// Creates the transport in the device's config space: `deviceFeatures` are the
    /// device-type bits offered (VERSION_1 and the ring features are added here),
    /// `deviceConfigLength` the size of its configuration structure, `queueCount` queues of
    /// at most `maxQueueSize` entries each (a power of two ≤ 32768, §2.7).
    public init(context: PCIDeviceContext, identity: VirtioPCIIdentity, deviceFeatures: UInt64, deviceConfigLength: Int,
                queueCount: Int, maxQueueSize: UInt16, options: VirtioTransportOptions = VirtioTransportOptions()) {
        self.context = context
        self.deviceConfigLength = max(0, min(deviceConfigLength, Int(VirtioPCILayout.deviceConfigMaxLength)))
        let count = min(max(queueCount, 1), VirtioPCILayout.maxQueues)
        queues = (0 ..< count).map { SplitVirtqueue(index: $0, maxSize: maxQueueSize, memory: context.memory) }
        packedQueues = (0 ..< count).map { PackedVirtqueue(index: $0, memory: context.memory) }
        var features = deviceFeatures | VirtioFeature.version1
        if options.eventIndex { features |= VirtioFeature.eventIndex }
        if options.indirectDescriptors { features |= VirtioFeature.indirectDescriptors }
        if options.packedRing { features |= VirtioFeature.ringPacked }
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
        if self.deviceConfigLength > 0 {
            config.addVirtioCapability(.device, bar: bar, offset: VirtioPCILayout.deviceConfigOffset,
                                       length: UInt64(self.deviceConfigLength))
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

    public func negotiated(_ bit: UInt64) -> Bool { VirtioFeature.has(negotiatedFeatures, bit) }

    /// Queue `index` in the layout the driver negotiated (split or packed).
    public func queue(_ index: Int) -> (any Virtqueue)? {
        guard index >= 0, index < queues.count else { return nil }
        return negotiated(VirtioFeature.ringPacked) ? packedQueues[index] : queues[index]
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
            let vector = queue.index < queues.count ? queues[queue.index].msixVector : virtioNoVector
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
        let name = queue.map { "queue \($0.index)" } ?? "device"
        context.guestLog.warning("virtio.needs-reset", "\(name): \(error); DEVICE_NEEDS_RESET set")
        for q in queues { q.disable() }
        for q in packedQueues { q.disable() }
        guard !status.contains(.needsReset) else { return }
        status.insert(.needsReset)
        if status.contains(.driverOK) { signalConfigChange() }
    }

    /// Device reset (status 0, §2.1; or a machine reset).
    public func reset() {
        status = []
        negotiatedFeatures = 0
        driverFeatures = 0
        deviceFeatureSelect = 0
        driverFeatureSelect = 0
        configVector = virtioNoVector
        queueSelect = 0
        isr = 0
        context.interrupts.setINTx(false)
        for q in queues { q.reset() }
        for q in packedQueues { q.reset() }
        model?.deviceReset()
    }

    // MARK: Notifications

    private func queueNotified(_ index: Int) {
        guard isLive, queue(index)?.isEnabled == true else { return }
        model?.queueNotified(index)
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
            return model?.readDeviceConfig(offset: Int(o), size: size) ?? 0
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
            model?.writeDeviceConfig(offset: Int(o), size: size, value: value)
        } else {
            context.guestLog.debug("virtio.bar-write", "ignored write of \(size) bytes at BAR\(bar)+0x\(String(offset, radix: 16))")
        }
    }

    // MARK: PCI_CFG window (forwarded by the device)

    public func configRead(offset: Int, size: Int) -> UInt32? {
        guard let w = configWindow, w.dataRange.contains(offset), let t = w.target(in: context.config) else { return nil }
        let v = barRead(t.bar, offset: t.offset, size: t.size)
        return UInt32(truncatingIfNeeded: v >> (UInt64(offset - w.dataRange.lowerBound) * 8))
    }

    public func configWrite(offset: Int, size: Int, value: UInt32) -> Bool {
        guard let w = configWindow, w.dataRange.contains(offset) else { return false }
        if let t = w.target(in: context.config), offset == w.dataRange.lowerBound {
            barWrite(t.bar, offset: t.offset, size: t.size, value: UInt64(value))
        }
        return true
    }

    // MARK: Common configuration (§4.1.4.3)

    private var selectedQueue: SplitVirtqueue? {
        Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil
    }

    private func commonRead(_ o: UInt64, size: Int) -> UInt64 {
        typealias C = VirtioCommonConfig
        let q = selectedQueue
        switch (o, size) {
        case (C.deviceFeatureSelect, 4): return UInt64(deviceFeatureSelect)
        case (C.deviceFeature, 4): return featureWord(offeredFeatures, deviceFeatureSelect)
        case (C.driverFeatureSelect, 4): return UInt64(driverFeatureSelect)
        case (C.driverFeature, 4): return featureWord(driverFeatures, driverFeatureSelect)
        case (C.configMSIXVector, 2): return UInt64(configVector)
        case (C.numQueues, 2): return UInt64(queues.count)
        case (C.deviceStatus, 1): return UInt64(status.rawValue)
        case (C.configGeneration, 1): return UInt64(configGeneration)
        case (C.queueSelect, 2): return UInt64(queueSelect)
        case (C.queueSize, 2): return UInt64(q?.size ?? 0)
        case (C.queueMSIXVector, 2): return UInt64(q?.msixVector ?? virtioNoVector)
        case (C.queueEnable, 2): return queue(Int(queueSelect))?.isEnabled == true ? 1 : 0
        case (C.queueNotifyOff, 2), (C.queueNotifyConfigData, 2): return UInt64(q == nil ? 0 : queueSelect)
        case (C.queueDescriptor, _), (C.queueDescriptor + 4, 4):
            return addressPart(q?.descriptorTable, o - C.queueDescriptor, size)
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
        case (C.queueMSIXVector, 2): selectedQueue?.msixVector = validVector(v16)
        case (C.queueSize, 2):
            guard let q = configurableQueue() else { return }
            q.size = v16
        case (C.queueEnable, 2):
            guard v16 == 1, let q = configurableQueue() else { return }
            enable(q)
        case (C.queueDescriptor, _), (C.queueDescriptor + 4, 4):
            guard let q = configurableQueue() else { return }
            q.descriptorTable = GuestAddress(merge(q.descriptorTable.raw, o - C.queueDescriptor, size, value))
        case (C.queueDriver, _), (C.queueDriver + 4, 4):
            guard let q = configurableQueue() else { return }
            q.driverArea = GuestAddress(merge(q.driverArea.raw, o - C.queueDriver, size, value))
        case (C.queueDevice, _), (C.queueDevice + 4, 4):
            guard let q = configurableQueue() else { return }
            q.deviceArea = GuestAddress(merge(q.deviceArea.raw, o - C.queueDevice, size, value))
        default:
            context.guestLog.debug("virtio.common-write", "ignored write of \(size) bytes at common+0x\(String(o, radix: 16))")
        }
    }

    /// Maps the selected queue's rings in the negotiated layout.
    private func enable(_ q: SplitVirtqueue) {
        let eventIndex = negotiated(VirtioFeature.eventIndex)
        let indirect = negotiated(VirtioFeature.indirectDescriptors)
        if negotiated(VirtioFeature.ringPacked) {
            let p = packedQueues[q.index]
            p.usesEventIndex = eventIndex
            p.allowsIndirect = indirect
            do {
                try p.enable(size: q.size, maxSize: q.maxSize, ring: q.descriptorTable, driver: q.driverArea, device: q.deviceArea)
            } catch { fail(p, error) }
        } else {
            q.usesEventIndex = eventIndex
            q.allowsIndirect = indirect
            do { try q.enable() } catch { fail(q, error) }
        }
    }

    /// The selected queue while its setup may still change: it exists, is not enabled yet
    /// and the device is not live (§4.1.4.3.2: no changes after queue_enable).
    private func configurableQueue() -> SplitVirtqueue? {
        guard let q = selectedQueue, !q.isEnabled, !packedQueues[q.index].isEnabled,
              !status.contains(.driverOK), !status.contains(.needsReset) else {
            context.guestLog.debug("virtio.queue-locked", "queue \(queueSelect) cannot be configured now")
            return nil
        }
        return q
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

    private func writeStatus(_ value: UInt8) {
        if value == 0 {
            reset()
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
        if added.contains(.driverOK) && status.contains(.driverOK) && !status.contains(.needsReset) {
            model?.activate()
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
        return model?.acceptsFeatures(driverFeatures) ?? false
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
