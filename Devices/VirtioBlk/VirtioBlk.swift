import Virtio
import VMMBlock
import VMMCore

/// The virtio-blk PCI function: the transport with a `VirtioBlk` inside.
public typealias VirtioBlkDevice = VirtioPCIDevice<VirtioBlk>

/// A virtio-blk device (virtio 1.2 §5.2), ported in behaviour from bhyve's
/// pci_virtio_block.c onto the `VirtioDevice` protocol: read, write, flush with a
/// guest-selectable write cache (CONFIG_WCE), GET_ID, discard and write-zeroes, read-only
/// disks, several request queues (MQ), and a configuration change when the disk's size
/// changes. Requests go to a `BlockBackend` asynchronously and complete on the I/O loop,
/// so a slow disk blocks neither a vCPU nor the network.
///
/// Unlike bhyve (which asserts on a malformed chain), every guest mistake is answered
/// with the status the spec defines (IOERR, UNSUPP) or, when the chain has no status
/// byte at all, returned unused.
public final class VirtioBlk: VirtioDevice, DeviceCounters, @unchecked Sendable {
    public static let typeName = "virtio-blk"
    public static let summary = "virtio-blk (virtio 1.x PCI, modern): file or NBD disk, flush/WCE, discard, write-zeroes, MQ"
    public static var optionHelp: [OptionHelp] { VirtioBlkConfiguration.help }
    public static let deviceID: UInt16 = 2
    /// PCI_CLASS_STORAGE_SCSI (0x0100), as QEMU's virtio_blk_pci_class_init.
    public static let pciClassCode: UInt32 = 0x01_00_00

    /// The largest DISCARD / WRITE_ZEROES range (1 GiB in 512-byte sectors); Linux splits
    /// larger ones (max_discard_sectors).
    static let maxRangeSectors: UInt32 = 1 << 21

    let context: VirtioDeviceContext
    let transport: VirtioTransport
    let backend: BlockBackend
    let configuration: VirtioBlkConfiguration
    public let layout: VirtioDeviceLayout
    /// Requests answered without the backend because they broke the rules (IOERR/UNSUPP),
    /// and chains returned unused because they had no status byte.
    public internal(set) var badRequests: UInt64 = 0
    public var counters: [(name: String, value: UInt64)] { [("bad-requests", badRequests)] }

    // State under context.lock.
    var geometry: BlockGeometry
    var writeback: Bool
    var parser = VirtioBlkRequestParser()
    var chain = DescriptorChain()
    /// Requests taken from each queue and not yet returned, oldest first. They are
    /// returned in this order (the packed ring needs it), so at most a queue's size.
    var inFlight: [[InFlightRequest]]
    var nextRequestID: UInt64 = 0
    /// Bumped on reset: completions of requests from before it are ignored.
    var generation: UInt64 = 0
    /// The backend refused a request (its queue was full): retry after a completion.
    var waitingForBackend = false
    /// Where the next room in the backend goes first (`resumeAfterBackendRoom`): turns
    /// through the queues so a busy queue 0 cannot take every freed slot.
    var nextQueueToResume = 0
    /// Requests the backend holds, of any generation: after a reset, until they are back,
    /// they still read into and write from the old driver's buffers (`isDraining`).
    var backendPending = 0
    /// A queue's pass past the per-action budget (VirtioBlkRequests.swift). After a reset
    /// it finds the queue disabled, or takes what the new driver posted, as a kick would.
    lazy var processContinuations = DeferredActions(count: inFlight.count, continuing: context) { [weak self] queue in
        self?.process(queue: queue)
    }

    public required init(options: inout DeviceOptions, context: VirtioDeviceContext) throws {
        let configuration = try VirtioBlkConfiguration(options: &options, instanceIndex: context.instanceIndex)
        let backend = try context.openBlockBackend(&options)
        let geometry = backend.geometry
        // Linux's virtblk_probe refuses blk_size below 512, above the page size or not a
        // power of two (blk_validate_block_size).
        guard geometry.logicalBlockSize >= 512, geometry.logicalBlockSize <= 4096,
              geometry.logicalBlockSize.nonzeroBitCount == 1 else {
            backend.stop()
            throw OptionError.badValue(key: "disk", value: backend.description,
                                       reason: "logical block size \(geometry.logicalBlockSize) is not 512…4096 and a power of two")
        }
        self.context = context
        self.transport = context.transport
        self.backend = backend
        self.configuration = configuration
        self.geometry = geometry
        self.writeback = configuration.writeback
        typealias F = VirtioBlkFeature
        var features = F.segMax | F.blockSize | F.flush | F.topology | F.configWCE
        if geometry.readOnly { features |= F.readOnly }
        if configuration.queueCount > 1 { features |= F.multiQueue }
        if geometry.canDiscard && !geometry.readOnly { features |= F.discard }
        if geometry.canWriteZeroes && !geometry.readOnly { features |= F.writeZeroes }
        layout = VirtioDeviceLayout(features: features, configLength: VirtioBlkConfigSpace.length,
                                    queueCount: configuration.queueCount, maxQueueSize: configuration.queueSize,
                                    ring: configuration.ring)
        inFlight = Array(repeating: [], count: configuration.queueCount)
        for i in inFlight.indices { inFlight[i].reserveCapacity(Int(configuration.queueSize)) }
        backend.onResize { [weak self] size in self?.resized(to: size) }
    }

    public func shutdown() { backend.stop() }

    // MARK: VirtioDevice

    public func acceptsFeatures(_ features: UInt64) -> Bool { true }

    var configSpace: VirtioBlkConfigSpace {
        let sectorsPerBlock = geometry.logicalBlockSize / 512
        let physicalExponent = geometry.physicalBlockSize > geometry.logicalBlockSize
            ? UInt8((geometry.physicalBlockSize / geometry.logicalBlockSize).trailingZeroBitCount) : 0
        return VirtioBlkConfigSpace(
            capacity: geometry.size / virtioBlkSectorSize,
            // Linux does not subtract header and status from seg_max; without indirect
            // descriptors a request takes seg_max + 2 ring slots (bhyve: VTBLK_RINGSZ - 2).
            segMax: UInt32(configuration.queueSize) - 2,
            blockSize: geometry.logicalBlockSize,
            physicalBlockExponent: physicalExponent,
            writeback: writeback ? 1 : 0,
            queueCount: UInt16(configuration.queueCount),
            maxDiscardSectors: Self.maxRangeSectors,
            maxDiscardSegments: 1,
            discardSectorAlignment: sectorsPerBlock,
            maxWriteZeroesSectors: Self.maxRangeSectors,
            maxWriteZeroesSegments: 1,
            writeZeroesMayUnmap: 1)
    }

    public func readConfig(offset: Int, size: Int) -> UInt64 { configSpace.read(offset: offset, size: size) }

    /// Only `writeback` is writable, and only with CONFIG_WCE and FLUSH negotiated (virtio
    /// 1.2 §5.2.5; Linux's cache_type_store writes it and reads it back). Other writes are
    /// ignored: a driver without FLUSH gets write-through (`activate`), and turning
    /// write-back on would give it a cache it cannot flush.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {
        guard offset == VirtioBlkConfigSpace.Offset.writeback, size == 1,
              transport.negotiated(VirtioBlkFeature.configWCE), transport.negotiated(VirtioBlkFeature.flush)
        else {
            context.guestLog.debug("virtio-blk.config-write", "ignored config write at \(offset)")
            return
        }
        writeback = value & 0xFF != 0
    }

    public func activate() {
        // A driver that did not take FLUSH cannot make writes durable, so it treats the
        // cache as write-through (Linux's virtblk_get_cache_mode: without CONFIG_WCE,
        // write-back only with VIRTIO_BLK_F_FLUSH; QEMU's virtio_blk_set_status turns the
        // write cache off then): every write is flushed before it completes.
        if !transport.negotiated(VirtioBlkFeature.flush) { writeback = false }
        for i in inFlight.indices { process(queue: i) }
    }

    public func reset() {
        generation &+= 1
        for i in inFlight.indices {
            context.memory.giveBack(inFlight[i].count)   // what `admit` lent
            inFlight[i].removeAll(keepingCapacity: true)
        }
        writeback = configuration.writeback
        waitingForBackend = false
        nextQueueToResume = 0
    }

    public func queueNotified(_ index: Int) { process(queue: index) }

    /// A driver's reset completes (the status reads 0) once the backend has given back
    /// every request from before it, as QEMU drains its block layer on reset.
    public var isDraining: Bool { backendPending > 0 }

    /// The disk's size changed (QMP block_resize, an NBD export that grew): the guest
    /// re-reads `capacity` on the configuration interrupt (virtblk_config_changed_work).
    func resized(to size: UInt64) {
        context.lock.withLock {
            geometry.size = size
            transport.configurationChanged()
        }
    }
}
