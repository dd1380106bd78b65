import Logging
import VMMBlock
import VMMCore
import VMMNet

/// A machine without KVM for register-level tests: real guest memory, the real PCI bus
/// and address spaces, a recording interrupt controller, virtual time, and in-memory
/// network endpoints. Tests drive devices the way firmware and a guest driver would.
public final class TestMachine: @unchecked Sendable {
    public let memory: GuestMemory
    public let pio: AddressSpace
    public let mmio: AddressSpace
    public let bus: PCIBus
    public let clock: VirtualClock
    public let interrupts: RecordingInterrupts
    public let loop: EPollEventLoop
    public let services: ServiceRegistry
    public let network: InMemoryNetworkFactory
    /// The disks block devices get (`InMemoryDisk`).
    public let disks = InMemoryDiskFactory()
    public let allocator: GuestAllocator
    public let ports: ConfigPorts
    public var firmware: Firmware { Firmware(ports: ports) }
    private var nextMMIO: UInt64 = PCMemoryMap.pciMMIO32.lowerBound
    private var nextIO: UInt64 = PCMemoryMap.pciIO.lowerBound

    /// - Parameters:
    ///   - networkFactory: replaces the in-memory endpoints (e.g. with real backends).
    ///   - blockFactory: replaces the in-memory disks (e.g. with files and NBD exports).
    ///   - memory: guest RAM the test maps itself instead of `memorySize` bytes from 0
    ///     (borrowed regions, to unmap and map again under a running device as a vfio-user
    ///     client does).
    public init(memorySize: UInt64 = 32 << 20, networkFactory: NetworkBackendFactory? = nil,
                blockFactory: BlockBackendFactory? = nil, memory: GuestMemory? = nil, logger: Logger = Logger(label: "swiftvmm.test")) throws {
        self.memory = try memory ?? GuestMemory(pcRAMSize: memorySize)
        pio = AddressSpace(kind: .io, logger: logger)
        mmio = AddressSpace(kind: .memory, logger: logger)
        clock = VirtualClock()
        interrupts = RecordingInterrupts()
        loop = try EPollEventLoop()
        services = ServiceRegistry()
        network = InMemoryNetworkFactory()
        services.register(NetworkBackendFactory.self, networkFactory ?? network)
        services.register(BlockBackendFactory.self, blockFactory ?? disks)
        bus = try PCIBus(memory: self.memory, pio: pio, mmio: mmio, interrupts: interrupts, clock: clock,
                         eventLoop: loop, services: services, logger: logger)
        allocator = GuestAllocator(memory: self.memory)
        ports = ConfigPorts(pio: pio)
    }

    deinit { bus.shutdown() }

    /// Creates a device from `options` ("mac=…,foo=bar") and, unless `enable` is false,
    /// sizes and places its BARs and enables decode and bus mastering through config cycles.
    public func add(_ type: any PCIDevice.Type, options: String = "", slot: Int? = nil, enable: Bool = true) throws -> TestDevice {
        let spec = try DeviceSpec.parse(options.isEmpty ? type.typeName : "\(type.typeName),\(options)")
        var opts = spec.options
        let before = network.endpoints.count
        let fn = try bus.add(type, options: &opts, slot: slot)
        let endpoint = network.endpoints.count > before ? network.endpoints.last : nil
        let dev = TestDevice(machine: self, function: fn, endpoint: endpoint)
        if enable { dev.enable() }
        return dev
    }

    func place(slot: Int) -> [Int: UInt64] {
        firmware.configure(slot: slot, mmio: &nextMMIO, io: &nextIO)
    }

    /// Runs what the I/O loop has queued (block completions, deferred work) until nothing
    /// is left, at most `limit` rounds; returns how many items ran.
    @discardableResult
    public func runQueuedWork(limit: Int = 1000) -> Int {
        var total = 0
        for _ in 0 ..< limit {
            let n = loop.runQueuedWork()
            if n == 0 { break }
            total += n
        }
        return total
    }

    /// Advances virtual time, firing device timers that fall due.
    public func advance(nanoseconds: UInt64) { clock.advance(by: nanoseconds) }
    public func advance(microseconds: UInt64) { clock.advance(by: microseconds * 1000) }
}
