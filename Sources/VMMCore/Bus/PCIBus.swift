import Logging
import Synchronization

public enum PCIBusError: Error, Equatable, CustomStringConvertible {
    case slotInUse(Int)
    case badSlot(Int, function: Int)
    case noFreeSlot
    case windowFull(device: String, bar: Int)
    public var description: String {
        switch self {
        case let .slotInUse(s): "PCI slot \(s) is already in use"
        case let .badSlot(s, f): "PCI slot \(s).\(f) is out of range (slots 1-31, functions 0-7)"
        case .noFreeSlot: "no free PCI slot (31 devices at most)"
        case let .windowFull(d, b): "no room for \(d) BAR\(b) in the PCI address window"
        }
    }
}

/// PCI bus 0: a host bridge at 00:00.0, functions in slots 1–31, configuration
/// mechanism #1 on ports 0xCF8/0xCFC (PCI 3.0 §3.2.2.3.2), BAR placement, and the
/// mapping of enabled BARs into the machine's address spaces.
public final class PCIBus: @unchecked Sendable {
    public let memory: GuestMemory
    public let pio: AddressSpace
    public let mmio: AddressSpace
    public let clock: DeviceClock
    public let eventLoop: EventLoop
    public let services: ServiceRegistry
    public let logger: Logger
    let guestLog: RateLimitedLogger
    let lines: SharedIRQLines
    let controller: InterruptController
    /// Which interrupt line (GSI) a slot's pin (1 = INTA) is wired to.
    public let intxRoute: @Sendable (_ slot: Int, _ pin: Int) -> Int
    public var doorbellAccelerator: DoorbellAccelerator?
    /// The chipset's reset line, pulled through the Reset Control Register at 0xCF9 (set
    /// by the platform before the VM runs; nil: the register only holds its bits).
    public var resetRequest: (@Sendable () -> Void)?
    public private(set) var functions: [PCIFunction] = []
    private let hostBridge: PCIConfigSpace
    private let lock = DeviceLock()
    /// Functions with a BAR refused for overlapping another's mapping: tried again when
    /// some mapping goes away (on hardware the BAR decodes once the conflict is gone).
    private let refusedMappings = Mutex<[ObjectIdentifier: PCIFunction]>([:])
    /// A retry of the refused mappings is queued on the loop and has not started: at most
    /// one waits however many mappings a guest releases meanwhile (a `rep outsw` toggling
    /// a command register released up to 1,024 per exit, each queuing a retry of its own).
    private let retryQueued = Atomic<Bool>(false)
    private var configAddress: UInt32 = 0
    /// Reset Control Register bits kept (SYS_RST, bit 1; FULL_RST, bit 3).
    private var resetControl: UInt8 = 0

    /// Default wiring: INTA–INTD of slot s go to IOAPIC pins 16–23, rotating per slot
    /// (the swizzle of PCI-to-PCI bridge spec §9.1), so up to 8 devices get their own line.
    public static let defaultINTxRoute: @Sendable (Int, Int) -> Int = { slot, pin in 16 + (slot + pin - 1) % 8 }

    public init(memory: GuestMemory, pio: AddressSpace, mmio: AddressSpace, interrupts: InterruptController,
                clock: DeviceClock, eventLoop: EventLoop, services: ServiceRegistry = ServiceRegistry(),
                logger: Logger = Logger(label: "swiftvmm.pci"),
                intxRoute: @escaping @Sendable (Int, Int) -> Int = PCIBus.defaultINTxRoute) throws(AddressSpaceError) {
        self.memory = memory; self.pio = pio; self.mmio = mmio; self.clock = clock; self.eventLoop = eventLoop
        self.services = services; self.logger = logger; self.intxRoute = intxRoute
        self.controller = interrupts
        self.lines = SharedIRQLines(controller: interrupts)
        self.guestLog = RateLimitedLogger(logger)
        // Intel 440FX host bridge identity: what Linux expects at 00:00.0 on a PC.
        hostBridge = PCIConfigSpace(identity: PCIIdentity(vendorID: 0x8086, deviceID: 0x1237, classCode: 0x06_00_00))
        try pio.map(0xCF8 ..< 0xCFC, owner: "pci-config-address", handler: ConfigAddressPort(bus: self))
        try pio.map(0xCFC ..< 0xD00, owner: "pci-config-data", handler: ConfigDataPort(bus: self))
    }

    // MARK: Adding devices

    /// Creates a device of `type` from `options` at `slot` (automatic when nil).
    /// `instanceIndex` numbers it among the process's devices (its default MAC and its
    /// control name `devN`); by default its place on this bus.
    @discardableResult
    public func add(_ type: any PCIDevice.Type, options: inout DeviceOptions, slot: Int? = nil, function: Int = 0,
                    instanceIndex: Int? = nil) throws -> PCIFunction {
        let s = try lock.withLock { () throws(PCIBusError) -> Int in
            if let slot {
                guard (1 ... 31).contains(slot), (0 ... 7).contains(function) else { throw .badSlot(slot, function: function) }
                guard !functions.contains(where: { $0.slot == slot && $0.function == function }) else { throw .slotInUse(slot) }
                return slot
            }
            guard let free = (1 ... 31).first(where: { s in !functions.contains { $0.slot == s } }) else { throw .noFreeSlot }
            return free
        }
        // `id=NAME` names the device for the control socket (QMP's set_link, query-pci), as
        // QEMU's -device id= does: any device takes it; it must be unique on the bus.
        let id = try options.take("id")
        if let id {
            guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw OptionError.badValue(key: "id", value: id, reason: "expected 1-64 letters, digits, '-', '_' or '.'")
            }
            // `devN` is what a device without an id is called (`controlName`): taken as an
            // id it would name two devices.
            guard !(id.hasPrefix("dev") && id.count > 3 && id.dropFirst(3).allSatisfy { $0.isASCII && $0.isNumber }) else {
                throw OptionError.badValue(key: "id", value: id, reason: "devN names the devices given no id; choose another")
            }
            guard !lock.withLock({ functions.contains { $0.id == id } }) else {
                throw OptionError.badValue(key: "id", value: id, reason: "another device already has this id")
            }
        }
        let config = PCIConfigSpace(identity: PCIIdentity(vendorID: 0xFFFF, deviceID: 0xFFFF, classCode: 0))
        let interrupts = PCIInterrupts(config: config, log: guestLog)
        interrupts.controller = controller
        interrupts.lines = lines
        let devLock = DeviceLock()
        let doorbells = DoorbellRegistry()
        // Counted over every device, not per type, so an e1000 and a virtio-net without
        // `mac=` get different default MACs (as QEMU numbers its NICs).
        let index = instanceIndex ?? lock.withLock { functions.count }
        let context = PCIDeviceContext(memory: memory, config: config, interrupts: interrupts, clock: clock,
                                       eventLoop: eventLoop, lock: devLock,
                                       logger: Logger(label: "swiftvmm.\(type.typeName)"), guestLog: guestLog,
                                       services: services, doorbells: doorbells, instanceIndex: index,
                                       cost: ActionCostMeter(), id: id)
        let device = try devLock.withLock { try type.init(options: &options, context: context) }
        do {
            try options.rejectUnknown()
        } catch {
            devLock.withLock { device.shutdown() }   // as every call into a device: its loop handlers may run
            throw error
        }
        let fn = PCIFunction(slot: s, function: function, device: device, config: config, interrupts: interrupts,
                             lock: devLock, doorbells: doorbells, cost: context.cost, id: id)
        if config.interruptPin != 0 {
            let line = intxRoute(s, Int(config.interruptPin))
            interrupts.intxLine = line
            config.interruptLine = UInt8(truncatingIfNeeded: line)
        }
        config.onDecodeChange = { [weak self, unowned fn] in self?.remap(fn) }
        let slotFunctions = lock.withLock { () -> [PCIFunction] in
            functions.append(fn)
            return functions.filter { $0.slot == s }
        }
        // A slot with more than one function says so in function 0's header type (bit 7),
        // or software never probes functions 1-7 (PCI 3.0 §6.2.1).
        if slotFunctions.count > 1 {
            for f in slotFunctions { f.lock.withLock { f.config.setMultiFunction() } }
        }
        return fn
    }

    /// Parses `NAME,key=value…` and adds it.
    @discardableResult
    public func add(spec: DeviceSpec, registry: PCIDeviceRegistry, slot: Int? = nil, function: Int = 0,
                    instanceIndex: Int? = nil) throws -> PCIFunction {
        var options = spec.options
        return try add(registry.lookup(spec.name), options: &options, slot: slot, function: function, instanceIndex: instanceIndex)
    }

    public func function(slot: Int, function: Int = 0) -> PCIFunction? {
        lock.withLock { functions.first { $0.slot == slot && $0.function == function } }
    }

    // MARK: Config mechanism #1

    fileprivate func configAddressRead() -> UInt32 { lock.withLock { configAddress } }
    fileprivate func configAddressWrite(_ v: UInt32) { lock.withLock { configAddress = v & 0x80FF_FFFC } }

    /// The PIIX3/ICH Reset Control Register, a byte port at 0xCF9 inside CONFIG_ADDRESS's
    /// dword. Linux's `reboot=pci` (and its DMI quirks) writes SYS_RST (0x02), then that
    /// with RST_CPU (0x06, or 0x0E for a cold reset); RST_CPU going to 1 resets the
    /// machine, as QEMU's piix `rcr_write` does.
    fileprivate func resetControlRead() -> UInt8 { lock.withLock { resetControl } }
    fileprivate func resetControlWrite(_ v: UInt8) {
        let reset = lock.withLock { () -> Bool in
            let pulled = v & 0x04 != 0
            resetControl = v & 0x0A
            return pulled
        }
        if reset, let resetRequest { resetRequest() }
    }

    /// Bus/device/function/register of the current CONFIG_ADDRESS, if enabled and on bus 0.
    private func selected() -> (slot: Int, function: Int, register: Int)? {
        let a = configAddressRead()
        guard a & 0x8000_0000 != 0, (a >> 16) & 0xFF == 0 else { return nil }
        return (Int((a >> 11) & 0x1F), Int((a >> 8) & 0x7), Int(a & 0xFC))
    }

    /// Config read by bus/slot/function (also used by ECAM-style callers and the test kit).
    public func configRead(slot: Int, function fnum: Int, offset: Int, size: Int) -> UInt32 {
        if slot == 0 && fnum == 0 { return lock.withLock { hostBridge.read(offset: offset, size: size) } }
        guard let fn = function(slot: slot, function: fnum) else {
            return size >= 4 ? 0xFFFF_FFFF : (1 << (UInt32(size) * 8)) - 1
        }
        return fn.configRead(offset: offset, size: size)
    }

    public func configWrite(slot: Int, function fnum: Int, offset: Int, size: Int, value: UInt32) {
        if slot == 0 && fnum == 0 { return } // the host bridge's header is read-only here
        function(slot: slot, function: fnum)?.configWrite(offset: offset, size: size, value: value)
    }

    fileprivate func configDataRead(byteOffset: Int, size: Int) -> UInt32 {
        guard let sel = selected() else { return size >= 4 ? 0xFFFF_FFFF : (1 << (UInt32(size) * 8)) - 1 }
        return configRead(slot: sel.slot, function: sel.function, offset: sel.register + byteOffset, size: size)
    }

    fileprivate func configDataWrite(byteOffset: Int, size: Int, value: UInt32) {
        guard let sel = selected() else { return }
        configWrite(slot: sel.slot, function: sel.function, offset: sel.register + byteOffset, size: size, value: value)
    }

    // MARK: BAR decoding

    /// Re-derives where `fn`'s BARs decode after a command or BAR write (called with fn.lock held).
    func remap(_ fn: PCIFunction) {
        let cmd = fn.config.command
        var changed = false, released = false, refused = false
        for bar in 0 ..< 6 {
            guard let kind = fn.config.bars[bar] else { continue }
            let enabled = kind.isIO ? cmd.contains(.ioSpace) : cmd.contains(.memorySpace)
            var wanted: Range<UInt64>?
            if enabled, let base = fn.config.barAddress(bar), base != 0 {
                let (end, wraps) = base.addingReportingOverflow(kind.size)
                // A 32-bit BAR must end below 0xFFFFFFFF: a BAR still holding the sizing
                // pattern (all ones) would otherwise decode at the top of 4 GiB, where a PC
                // has its firmware flash (QEMU's pci_bar_address refuses it the same way).
                let limit: UInt64 = kind.isIO ? 0x1_0000 : (kind.is64Bit ? UInt64.max : 0xFFFF_FFFF)
                if !wraps && end <= limit { wanted = base ..< end }
            }
            guard wanted != fn.mappedBARs[bar] else { continue }
            let space = kind.isIO ? pio : mmio
            if let id = fn.mappingIDs[bar] {
                space.unmap(id)
                released = true
                changed = true
            }
            fn.mappingIDs[bar] = nil
            fn.mappedBARs[bar] = nil
            guard let range = wanted else { continue }
            if !kind.isIO, memory.regions.contains(where: { $0.base.raw < range.upperBound && range.lowerBound < $0.base.raw &+ $0.size }) {
                guestLog.warning("pci.bar-over-ram", "\(fn.name) BAR\(bar) at 0x\(String(range.lowerBound, radix: 16)) overlaps RAM; not decoded")
                continue
            }
            do {
                fn.mappingIDs[bar] = try space.map(range, owner: "\(fn.name) BAR\(bar)", handler: BARHandler(function: fn, bar: bar))
                fn.mappedBARs[bar] = range
                changed = true
            } catch {
                guestLog.warning("pci.bar-overlap", "\(fn.name) BAR\(bar) not decoded: \(error)")
                refused = true
            }
        }
        // Only a moved mapping moves doorbells: a command write that changes Bus Master
        // or Interrupt Disable (Linux's pci_intx, pci_clear_master) leaves them alone, and
        // so does a BAR refused again (still overlapping).
        let doorbellWasRefused = fn.doorbellRefused
        if changed || fn.doorbellRefused { fn.doorbellRefused = !placeDoorbells(fn) }
        let id = ObjectIdentifier(fn)
        // Any refused BAR or doorbell is retried once something was released: another
        // function's, or one of this function's own that this pass refused before a later
        // BAR of the same function moved out of its way. A doorbell newly refused is also
        // retried once from the loop: the device whose doorbell held its place may have
        // let go between the refusal and this entry, having found no one to retry.
        let retry = refusedMappings.withLock { r -> Bool in
            if refused || fn.doorbellRefused { r[id] = fn } else { r[id] = nil }
            return (released || (fn.doorbellRefused && !doorbellWasRefused)) && !r.isEmpty
        }
        // Retried on the loop, each under its own lock (this one's is held here). The
        // closure holds only the bus, weakly: a function it held would keep the loop that
        // holds the closure alive through the function's context (a cycle, leaked by a
        // machine torn down before the loop ran it).
        if retry, !retryQueued.exchange(true, ordering: .acquiringAndReleasing) {
            eventLoop.execute { [weak self] in
                guard let self else { return }
                // Cleared first: a mapping released while these run queues the next retry.
                self.retryQueued.store(false, ordering: .releasing)
                for other in self.refusedMappings.withLock({ Array($0.values) }) {
                    other.lock.withLock { self.remap(other) }
                }
            }
        }
    }

    /// Points each of `fn`'s doorbells at where its BAR decodes now (or nowhere); false if
    /// the platform refused a place. A doorbell is made once and then only moved.
    private func placeDoorbells(_ fn: PCIFunction) -> Bool {
        guard let accel = doorbellAccelerator else { return true }
        var allPlaced = true
        for (i, d) in fn.doorbells.doorbells.enumerated() {
            var place: DoorbellPlace?
            if (0 ..< 6).contains(d.bar), let range = fn.mappedBARs[d.bar], let kind = fn.config.bars[d.bar],
               d.offset < UInt64(range.count) {
                place = DoorbellPlace(space: kind.isIO ? .io : .memory, address: range.lowerBound + d.offset)
            }
            if fn.acceleratedDoorbells.count <= i { fn.acceleratedDoorbells.append(nil) }
            if fn.acceleratedDoorbells[i] == nil, place != nil {
                let handler = d.handler, lock = fn.lock, cost = fn.cost
                fn.acceleratedDoorbells[i] = accel.makeDoorbell(size: d.size, value: d.value) {
                    lock.withLock { cost.measure { handler() } }
                }
            }
            if let doorbell = fn.acceleratedDoorbells[i], !doorbell.move(to: place) { allPlaced = false }
        }
        return allPlaced
    }

    // MARK: Firmware duties

    /// Places every BAR in the PCI windows, largest first so alignment wastes nothing,
    /// and enables decoding and bus mastering — what a BIOS does before booting Linux.
    public func assignResources(mmio32: Range<UInt64> = PCMemoryMap.pciMMIO32, mmio64: Range<UInt64> = PCMemoryMap.pciMMIO64,
                                io: Range<UInt64> = PCMemoryMap.pciIO) throws(PCIBusError) {
        var requests: [(fn: PCIFunction, bar: Int, kind: PCIBARKind)] = []
        for fn in lock.withLock({ functions }) {
            for bar in 0 ..< 6 { if let k = fn.config.bars[bar] { requests.append((fn, bar, k)) } }
        }
        requests.sort { $0.kind.size > $1.kind.size }
        var next = [io.lowerBound, mmio32.lowerBound, mmio64.lowerBound]
        let limits = [io.upperBound, mmio32.upperBound, mmio64.upperBound]
        // Like SeaBIOS, 64-bit BARs go below 4 GiB while there is room (32-bit guests and
        // early boot code can reach them there) and above 4 GiB otherwise.
        for r in requests {
            let size = r.kind.size
            let windows = r.kind.isIO ? [0] : (r.kind.is64Bit ? [1, 2] : [1])
            var placed: UInt64?
            for w in windows {
                let aligned = (next[w] + size - 1) & ~(size - 1)
                guard aligned >= next[w], aligned <= limits[w], size <= limits[w] - aligned else { continue }
                next[w] = aligned + size
                placed = aligned
                break
            }
            guard let address = placed else { throw .windowFull(device: r.fn.name, bar: r.bar) }
            r.fn.lock.withLock { r.fn.config.setBARAddress(r.bar, address) }
        }
        for fn in lock.withLock({ functions }) {
            let hasIO = fn.config.bars.contains { $0?.isIO == true }
            let hasMem = fn.config.bars.contains { $0 != nil && $0?.isIO == false }
            var cmd = fn.config.command
            if hasIO { cmd.insert(.ioSpace) }
            if hasMem { cmd.insert(.memorySpace) }
            cmd.insert(.busMaster)
            fn.configWrite(offset: PCIConfigOffset.command, size: 2, value: UInt32(cmd.rawValue))
        }
    }

    /// Machine reset: every device back to power-on state, BARs unprogrammed.
    public func reset() {
        for fn in lock.withLock({ functions }) {
            fn.lock.withLock {
                fn.config.write(offset: PCIConfigOffset.command, size: 2, value: 0)
                for bar in 0 ..< 6 where fn.config.bars[bar] != nil { fn.config.setBARAddress(bar, 0) }
                fn.interrupts.reset()
                fn.device.reset()
            }
        }
    }

    /// Tears every device down (backends closed, fds released).
    public func shutdown() {
        for fn in lock.withLock({ functions }) { fn.lock.withLock { fn.device.shutdown() } }
    }
}

private final class ConfigAddressPort: AccessHandler, @unchecked Sendable {
    unowned let bus: PCIBus
    init(bus: PCIBus) { self.bus = bus }
    // Only 32-bit accesses reach CONFIG_ADDRESS (§3.2.2.3.2), and a byte at 0xCF9 is the
    // Reset Control Register; other accesses read all ones and are dropped, as QEMU's
    // pci_host_config_read/write answer them.
    func read(offset: UInt64, size: Int) -> UInt64 {
        if size == 4 && offset == 0 { return UInt64(bus.configAddressRead()) }
        if size == 1 && offset == 1 { return UInt64(bus.resetControlRead()) }
        return size >= 8 ? .max : (1 << (UInt64(size) * 8)) - 1
    }
    func write(offset: UInt64, size: Int, value: UInt64) {
        if size == 4 && offset == 0 { bus.configAddressWrite(UInt32(truncatingIfNeeded: value)) }
        if size == 1 && offset == 1 { bus.resetControlWrite(UInt8(truncatingIfNeeded: value)) }
    }
}

private final class ConfigDataPort: AccessHandler, @unchecked Sendable {
    unowned let bus: PCIBus
    init(bus: PCIBus) { self.bus = bus }
    func read(offset: UInt64, size: Int) -> UInt64 {
        guard [1, 2, 4].contains(size) else { return .max }
        return UInt64(bus.configDataRead(byteOffset: Int(offset), size: size))
    }
    func write(offset: UInt64, size: Int, value: UInt64) {
        guard [1, 2, 4].contains(size) else { return }
        bus.configDataWrite(byteOffset: Int(offset), size: size, value: UInt32(truncatingIfNeeded: value))
    }
}
