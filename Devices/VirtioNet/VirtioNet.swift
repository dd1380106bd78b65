import Logging
import VMMCore
import VMMNet
import Virtio

/// The virtio-net PCI function: the transport with a `VirtioNet` inside (what the
/// device catalog lists).
public typealias VirtioNetDevice = VirtioPCIDevice<VirtioNet>

/// A virtio-net device (virtio 1.2 §5.1): RX/TX queue pairs (MQ), a control queue (RX
/// modes, MAC table, guest offloads, queue pairs), link status, MTU, mergeable receive
/// buffers and checksum/segmentation offloads negotiated end to end with the backend. TX
/// runs on the notifying thread (vCPU or, with an ioeventfd, the I/O loop) and never
/// blocks: backends' `send` does not. RX runs on the I/O loop and pushes back on the
/// backend when the guest has no buffers.
public final class VirtioNet: VirtioDevice, FrameReceiver, @unchecked Sendable {
    public static let typeName = "virtio-net"
    public static let summary = "virtio-net (virtio 1.x PCI, modern): MSI-X, MQ, offloads, control queue"
    public static var optionHelp: [OptionHelp] { VirtioNetConfiguration.help }
    public static let deviceID: UInt16 = 1
    /// PCI_CLASS_NETWORK_ETHERNET.
    public static let pciClassCode: UInt32 = 0x02_00_00

    let context: VirtioDeviceContext
    let transport: VirtioTransport
    let backend: LinkControl
    let configuration: VirtioNetConfiguration
    public let layout: VirtioDeviceLayout
    /// Frames and bytes the device moved, and the frames it could not deliver, by reason
    /// (updated under the device lock only).
    public let counters = BackendCounters(serialized: true)
    /// Times a frame waited because the guest had no receive buffer (back-pressure, not a drop).
    public internal(set) var receiveStalls: UInt64 = 0

    // Device state (under context.lock).
    var mac: MACAddress
    let mtu: UInt16
    var linkUp: Bool
    var filter = MACFilter()
    var unicastTable: [MACAddress] = []
    var multicastTable: [MACAddress] = []
    var unicastOverflow = false, multicastOverflow = false
    var allUnicastMode = false, allMulticastMode = false
    var activeQueuePairs = 1
    var receiveOffloads: NetOffloads = []
    /// The longest non-GSO frame the guest may be handed: mtu + the Ethernet header once
    /// VIRTIO_NET_F_MTU is negotiated (§5.1.4.1), else the device's own limit.
    var receiveFrameLimit = VirtioNet.maximumReceiveFrame
    var waitingForReceiveBuffers = false

    // Scratch state reused for every frame so the data path does not allocate.
    var chain = DescriptorChain()
    var frameSegments: [UnsafeRawBufferPointer] = []
    /// Frames sent in the current TX pass, added to `counters` when it ends.
    var sentTally = BackendCounters.Tally()
    /// Frames received in the current delivery, added to `counters` when it ends.
    var receivedTally = BackendCounters.Tally()
    var singleSegment: [UnsafeRawBufferPointer] = [UnsafeRawBufferPointer(start: nil, count: 0)]
    /// Nil only while a delivery has it (`VirtioNetReceive.swift`).
    var receiveScratch: ReceiveScratch? = ReceiveScratch()
    let scratch = FrameScratchBuffer()
    /// A TX pass past the per-action budget, per queue pair (VirtioNetTransmit.swift).
    lazy var transmitContinuations = DeferredActions(count: configuration.queuePairs, continuing: context) { [weak self] pair in
        guard let self, let queue = self.transmitQueue(pair: pair) else { return }
        self.transmit(queue)
    }
    /// Buffers arrived while the device asked for more: receive again on the next turn of
    /// the loop (VirtioNetReceive.swift).
    lazy var receiveResumption = DeferredAction(continuing: context) { [weak self] in self?.resumeReceive() }
    /// Control commands past the per-action budget (VirtioNetControl.swift).
    lazy var controlContinuation = DeferredAction(continuing: context) { [weak self] in
        guard let self, let index = self.controlQueueIndex, let queue = self.transport.queue(index) else { return }
        self.processControl(queue)
    }
    var controlBytes: [UInt8] = []

    public required init(options: inout DeviceOptions, context: VirtioDeviceContext) throws {
        let configuration = try VirtioNetConfiguration(options: &options, instanceIndex: context.instanceIndex)
        let backend = try context.openNetworkBackend(&options)
        let caps = backend.capabilities
        // The MTU must fit what the backend takes with an Ethernet header (VIRTIO_NET_F_MTU
        // promises the guest that much, §5.1.4.2).
        let largestMTU = min(max(0, caps.maxFrameSize - 14), Int(UInt16.max))
        if let mtu = configuration.mtu, Int(mtu) > largestMTU {
            backend.stop()
            throw OptionError.badValue(key: "mtu", value: String(mtu),
                                       reason: "backend \(backend.description) takes frames of at most \(caps.maxFrameSize) bytes (MTU \(largestMTU))")
        }
        self.mtu = configuration.mtu ?? UInt16(min(1500, largestMTU))
        let offers = BackendOffers(deliversSegments: caps.virtioNetHeader && caps.offloads.isSuperset(of: [.tso4, .tso6]),
                                   deliversUFO: caps.virtioNetHeader && caps.offloads.contains(.ufo),
                                   completesUFO: caps.virtioNetHeader && caps.offloads.contains(.ufo))
        let queueCount = 2 * configuration.queuePairs + (configuration.controlQueue ? 1 : 0)
        self.context = context
        self.transport = context.transport
        self.backend = backend
        self.configuration = configuration
        self.mac = configuration.mac
        self.linkUp = backend.isLinkUp
        self.layout = VirtioDeviceLayout(features: configuration.offeredFeatures(backend: offers),
                                         configLength: VirtioNetDeviceConfig.length, queueCount: queueCount,
                                         maxQueueSize: configuration.queueSize, ring: configuration.ring)
        receiveScratch?.segments.reserveCapacity(64)
        frameSegments.reserveCapacity(64)
        receiveScratch?.chains.reserveCapacity(Int(configuration.queueSize))
        controlBytes.reserveCapacity(VirtioNet.maxControlCommand)
        resetFilter()
        backend.start(receiver: self)
    }

    public func shutdown() { backend.stop() }

    // MARK: Queues

    /// With MQ negotiated the control queue follows all pairs; otherwise it is queue 2 (§5.1.2).
    var controlQueueIndex: Int? {
        guard transport.negotiated(VirtioNetFeature.ctrlVQ) else { return nil }
        return transport.negotiated(VirtioNetFeature.mq) ? 2 * configuration.queuePairs : 2
    }

    func transmitQueue(pair: Int) -> (any Virtqueue)? { transport.queue(2 * pair + 1) }

    /// The queue pairs the driver may use: without MQ only the first (§5.1.2: receiveq1,
    /// transmitq1, controlq), whatever `queues=` offers; QEMU deletes the others.
    var usableQueuePairs: Int { transport.negotiated(VirtioNetFeature.mq) ? configuration.queuePairs : 1 }

    // MARK: VirtioDevice

    public func acceptsFeatures(_ features: UInt64) -> Bool {
        guard VirtioNetFeature.dependenciesSatisfied(features) else {
            context.guestLog.warning("virtio-net.features", "refused features 0x\(String(features, radix: 16)): dependencies of virtio 1.2 §5.1.3.1 not met")
            return false
        }
        return true
    }

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        let status: UInt16 = configuration.status && linkUp ? VirtioNetDeviceConfig.linkUp : 0
        return VirtioNetDeviceConfig(mac: mac, status: status, maxQueuePairs: UInt16(configuration.queuePairs),
                                     mtu: mtu).read(offset: offset, size: size)
    }

    /// Modern drivers never write the config space (the MAC changes through the control
    /// queue, §5.1.4.2); writes are ignored.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {
        context.guestLog.debug("virtio-net.config-write", "ignored config write at \(offset)")
    }

    public func activate() {
        receiveOffloads = VirtioNetFeature.receiveOffloads(transport.negotiatedFeatures)
        backend.setReceiveOffloads(receiveOffloads)
        receiveFrameLimit = transport.negotiated(VirtioNetFeature.mtu) ? Int(mtu) + HeaderSize.ethernet : VirtioNet.maximumReceiveFrame
        // Chains made available before DRIVER_OK are handled now.
        for pair in 0 ..< usableQueuePairs { if let q = transmitQueue(pair: pair) { transmit(q) } }
        if let c = controlQueueIndex, let q = transport.queue(c) { processControl(q) }
        resumeReceive()
    }

    public func reset() {
        mac = configuration.mac
        activeQueuePairs = 1
        receiveOffloads = []
        receiveFrameLimit = VirtioNet.maximumReceiveFrame
        backend.setReceiveOffloads([])
        resetFilter()
        // A backend holding a frame for us must offer it again (it will be dropped now).
        resumeReceive()
    }

    public func queueNotified(_ index: Int) {
        guard let queue = transport.queue(index) else { return }
        if index == controlQueueIndex {
            processControl(queue)
        } else if index / 2 >= usableQueuePairs {
            context.guestLog.debug("virtio-net.queue", "queue \(index) is not one of the \(usableQueuePairs) pairs negotiated; kick ignored")
        } else if index % 2 == 1 {
            transmit(queue)
        } else {
            resumeReceive() // a receive queue got buffers
        }
    }

    // MARK: FrameReceiver

    public func linkStateChanged(up _: Bool) {
        context.lock.withLock {
            // The link now, not the notice's value, which may be stale (FrameReceiver).
            let up = backend.isLinkUp
            guard up != linkUp else { return }
            linkUp = up
            if configuration.status { transport.configurationChanged() }
        }
    }

    /// The guest added receive buffers (or the device was reset): a backend holding a
    /// frame gets to offer it again.
    func resumeReceive() {
        guard waitingForReceiveBuffers else { return }
        waitingForReceiveBuffers = false
        backend.resumeReceive()
    }
}
