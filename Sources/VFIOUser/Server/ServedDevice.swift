import Logging
import VMMCore

/// One device model served over vfio-user, as a third platform beside KVM and the test
/// machine: the device sits alone on its own PCI bus, its guest memory is whatever the
/// current client lends (DMA_MAP), and its interrupts go out as eventfds. The device
/// object outlives clients, and is reset whenever one leaves.
public final class ServedDevice: @unchecked Sendable {
    /// The most DMA regions a client may map at once (QEMU's pc machine maps a handful).
    public static let dmaRegionLimit = 64

    public let name: String
    public let function: PCIFunction
    let bus: PCIBus
    let memory: GuestMemory
    let interrupts: EventFDInterrupts
    let dma: DMAMappings

    /// Creates the device from `spec` (as for `swiftvmm run`). Throws the device's own
    /// option errors; nothing is left behind on failure. `instanceIndex` is its place
    /// among the devices the process serves: each sits alone on a bus, so the bus cannot
    /// number them, and two NICs without `mac=` or `id=` would share a MAC and a name.
    public convenience init(spec: DeviceSpec, registry: PCIDeviceRegistry, services: ServiceRegistry, loop: EPollEventLoop,
                            logger: Logger, instanceIndex: Int = 0) throws {
        try self.init(spec: spec, registry: registry, services: services, loop: loop, logger: logger,
                      instanceIndex: instanceIndex, dmaBudget: .process)
    }

    /// The same, counting the client's mappings against `dmaBudget` (tests: their own).
    init(spec: DeviceSpec, registry: PCIDeviceRegistry, services: ServiceRegistry, loop: EPollEventLoop,
         logger: Logger, instanceIndex: Int = 0, dmaBudget: DMAByteBudget) throws {
        memory = GuestMemory(borrowedRegionLimit: Self.dmaRegionLimit)
        interrupts = try EventFDInterrupts()
        // The bus's address spaces are private: the client addresses BARs by region index.
        bus = try PCIBus(memory: memory, pio: AddressSpace(kind: .io, logger: logger),
                         mmio: AddressSpace(kind: .memory, logger: logger), interrupts: interrupts,
                         clock: loop, eventLoop: loop, services: services, logger: logger)
        let fn = try bus.add(spec: spec, registry: registry, slot: 1, instanceIndex: instanceIndex)
        function = fn
        name = fn.name
        fn.routeMessageVectors(to: interrupts)
        let declared = fn.lock.withLock {
            (fn.config.interruptPin != 0, fn.interrupts.msiVectorCount, fn.interrupts.msixVectorCount)
        }
        interrupts.declare(intx: declared.0, msi: declared.1, msix: declared.2)
        dma = DMAMappings(memory: memory, lock: fn.lock, limit: Self.dmaRegionLimit, budget: dmaBudget)
    }

    /// Client regions mapped into this process now (for tests and the fuzz target).
    public var memoryRegionCount: Int { function.lock.withLock { memory.regions.count } }

    // MARK: Regions (vfio.h VFIO_PCI_*_REGION_INDEX)

    static let configRegion: UInt32 = 7
    static let regionCount: UInt32 = 9

    /// Size of region `index`: BARs as the device declared them (a 64-bit BAR's upper
    /// half and missing BARs are empty), 256 bytes of config space, no ROM or VGA.
    func regionSize(_ index: UInt32) -> UInt64 {
        switch index {
        case 0 ..< 6: function.lock.withLock { function.config.bars[Int(index)]?.size ?? 0 }
        case Self.configRegion: UInt64(PCIConfigSpace.size)
        default: 0
        }
    }

    /// Reads `count` bytes at `offset` of `region`, as naturally aligned accesses.
    func read(region: UInt32, offset: UInt64, count: Int) throws(VFIOUserError) -> [UInt8] {
        try checkRange(region: region, offset: offset, count: count)
        var out = [UInt8](repeating: 0, count: count)
        forEachAccess(region: region, offset: offset, count: count) { at, size, position in
            let v: UInt64 = region == Self.configRegion
                ? UInt64(function.configRead(offset: Int(at), size: size))
                : function.barRead(Int(region), offset: at, size: size)
            for i in 0 ..< size { out[position + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        return out
    }

    func write(region: UInt32, offset: UInt64, data: [UInt8]) throws(VFIOUserError) {
        try checkRange(region: region, offset: offset, count: data.count)
        forEachAccess(region: region, offset: offset, count: data.count) { at, size, position in
            var v: UInt64 = 0
            for i in 0 ..< size { v |= UInt64(data[position + i]) << (8 * i) }
            if region == Self.configRegion {
                function.configWrite(offset: Int(at), size: size, value: UInt32(truncatingIfNeeded: v))
            } else {
                function.barWrite(Int(region), offset: at, size: size, value: v)
            }
        }
    }

    /// The most bytes one REGION_READ/WRITE may cover: a guest access is at most 8 bytes
    /// and QEMU reads config space whole, so this bounds the device calls per message.
    static let maxAccessBytes = 4096

    private func checkRange(region: UInt32, offset: UInt64, count: Int) throws(VFIOUserError) {
        guard region < Self.regionCount else { throw .outOfRange("region \(region) (0-8)") }
        let size = regionSize(region)
        guard size > 0 else { throw .outOfRange("region \(region) is not implemented by \(name)") }
        guard count > 0, count <= Self.maxAccessBytes else { throw .outOfRange("access of \(count) bytes (1-\(Self.maxAccessBytes))") }
        guard offset < size, UInt64(count) <= size - offset else {
            throw .outOfRange("region \(region) access 0x\(String(offset, radix: 16))+\(count) beyond its \(size) bytes")
        }
    }

    /// Splits an access into the largest naturally aligned pieces (8 bytes at most in a
    /// BAR, 4 in config space), as a CPU's accesses would reach the device.
    private func forEachAccess(region: UInt32, offset: UInt64, count: Int, _ body: (UInt64, Int, Int) -> Void) {
        let widest = region == Self.configRegion ? 4 : 8
        var position = 0
        while position < count {
            let at = offset + UInt64(position)
            var size = widest
            while size > 1 && (at % UInt64(size) != 0 || size > count - position) { size /= 2 }
            body(at, size, position)
            position += size
        }
    }

    // MARK: Lifecycle

    /// DEVICE_RESET (or QMP `system_reset`): the device, its config space and interrupt
    /// state back to power-on.
    public func resetDevice() { bus.reset() }

    /// The client went away (vfio-user "Client Disconnection"): the device is reset, then
    /// the client's memory unmapped and its eventfds closed. Kept, the state would carry
    /// the departed client's rings and buffer addresses (virtqueue areas, e1000 RDBA/TDBA)
    /// over to the next one: QEMU maps its RAM while it realizes the device, before its
    /// first DEVICE_RESET, and a device still receiving would write frames and used
    /// entries at addresses the previous client chose, inside the new client's guest.
    func clientGone() {
        bus.reset()
        dma.unmapAll()
        interrupts.closeAll()
    }

    /// The server is stopping: backends, timers and the interrupt-signalling thread released.
    public func shutdown() {
        clientGone()
        bus.shutdown()
        interrupts.stop()
    }
}
