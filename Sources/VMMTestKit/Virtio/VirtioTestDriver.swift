import VMMCore

/// What Linux's virtio_pci_modern does to a virtio device, register by register, so a
/// test of any virtio device type (net, blk…) is as short as one of an e1000: find the
/// capabilities, negotiate features, set up split or packed queues with MSI-X vectors,
/// DRIVER_OK, kick. Queues are driven with `SplitDriverQueue` / `PackedDriverQueue`.
/// Offsets are those of virtio 1.2 §4.1.4; the device's own code is not used.
open class VirtioTestDriver {
    /// Where one virtio structure lives, as its capability says (§4.1.4).
    public struct Capability {
        public let bar: Int
        public let offset: UInt64
        public let length: UInt64
        /// notify_off_multiplier for the notify capability.
        public let extra: UInt32
        public let configOffset: Int
    }

    /// Feature bits every virtio device shares (§6).
    public enum Feature {
        public static let indirect: UInt64 = 1 << 28, eventIndex: UInt64 = 1 << 29
        public static let version1: UInt64 = 1 << 32, ringPacked: UInt64 = 1 << 34
    }

    /// Device status bits (§2.1).
    public enum Status {
        public static let acknowledge: UInt8 = 1, driver: UInt8 = 2, driverOK: UInt8 = 4
        public static let featuresOK: UInt8 = 8, needsReset: UInt8 = 64
    }

    public let machine: TestMachine
    public let function: TestDevice
    public private(set) var capabilities: [UInt8: Capability] = [:]
    public var queues: [Int: SplitDriverQueue] = [:]
    public var features: UInt64 = 0

    /// Queues `bringUp` sets up when not told (a subclass for a device type overrides it).
    open var defaultQueueCount: Int { 1 }

    public init(function: TestDevice, machine: TestMachine) {
        self.machine = machine
        self.function = function
        discoverCapabilities()
    }

    /// vp_modern_probe: walk the vendor capabilities (id 0x09), keep the first of each type.
    public func discoverCapabilities() {
        var p = Int(function.configRead(0x34, size: 1)) & 0xFC
        var hops = 0
        while p != 0 && hops < 48 {
            if function.configRead(p, size: 1) == 0x09 {
                let type = UInt8(function.configRead(p + 3, size: 1))
                if capabilities[type] == nil {
                    capabilities[type] = Capability(bar: Int(function.configRead(p + 4, size: 1)),
                                                    offset: UInt64(function.configRead(p + 8)), length: UInt64(function.configRead(p + 12)),
                                                    extra: function.configRead(p + 2, size: 1) >= 20 ? function.configRead(p + 16) : 0,
                                                    configOffset: p)
                }
            }
            p = Int(function.configRead(p + 1, size: 1)) & 0xFC
            hops += 1
        }
    }

    public var common: Capability { capabilities[1] ?? Capability(bar: 0, offset: 0, length: 0, extra: 0, configOffset: 0) }
    public var notifyCap: Capability { capabilities[2] ?? Capability(bar: 0, offset: 0x3000, length: 0, extra: 4, configOffset: 0) }
    public var isrCap: Capability { capabilities[3] ?? Capability(bar: 0, offset: 0x1000, length: 1, extra: 0, configOffset: 0) }
    public var deviceCap: Capability { capabilities[4] ?? Capability(bar: 0, offset: 0x2000, length: 0, extra: 0, configOffset: 0) }

    // MARK: Registers

    /// The common configuration (§4.1.4.3) at `offset`.
    public func read(_ offset: UInt64, _ size: Int) -> UInt64 { function.read(bar: common.bar, offset: common.offset + offset, size: size) }
    public func write(_ offset: UInt64, _ size: Int, _ v: UInt64) {
        function.write(bar: common.bar, offset: common.offset + offset, size: size, value: v)
    }
    public var status: UInt8 { UInt8(read(0x14, 1)) }
    public func setStatus(_ s: UInt8) { write(0x14, 1, UInt64(s)) }
    public var configGeneration: UInt8 { UInt8(read(0x15, 1)) }
    public func readISR() -> UInt8 { UInt8(truncatingIfNeeded: function.read(bar: isrCap.bar, offset: isrCap.offset, size: 1)) }
    /// The device-specific configuration (§4.1.4.6).
    public func config(_ offset: UInt64, _ size: Int) -> UInt64 {
        function.read(bar: deviceCap.bar, offset: deviceCap.offset + offset, size: size)
    }
    public func writeConfig(_ offset: UInt64, _ size: Int, _ v: UInt64) {
        function.write(bar: deviceCap.bar, offset: deviceCap.offset + offset, size: size, value: v)
    }

    public var deviceFeatures: UInt64 {
        write(0x00, 4, 0)
        let low = read(0x04, 4)
        write(0x00, 4, 1)
        return low | read(0x04, 4) << 32
    }

    // MARK: Bring-up (virtio 1.2 §3.1.1)

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK and its check. Returns whether
    /// accepted. `resetting: false` skips the reset, as a driver may right after a
    /// machine reset (the status already reads 0): for tests of what that allows.
    @discardableResult
    public func negotiate(resetting: Bool = true, _ choose: (UInt64) -> UInt64 = { $0 }) -> Bool {
        if resetting { setStatus(0) }
        setStatus(Status.acknowledge)
        setStatus(Status.acknowledge | Status.driver)
        features = choose(deviceFeatures)
        write(0x08, 4, 0); write(0x0C, 4, features & 0xFFFF_FFFF)
        write(0x08, 4, 1); write(0x0C, 4, features >> 32)
        setStatus(Status.acknowledge | Status.driver | Status.featuresOK)
        return status & Status.featuresOK != 0
    }

    /// vp_modern setup_vq: select, size, addresses in 32-bit halves, vector, enable.
    @discardableResult
    public func setupQueue(_ index: Int, size: UInt16? = nil, vector: UInt16? = nil) -> SplitDriverQueue {
        write(0x16, 2, UInt64(index))
        let n = size ?? UInt16(read(0x18, 2))
        write(0x18, 2, UInt64(n))
        let q = SplitDriverQueue(index: index, size: n, machine: machine)
        programQueue(areas: [q.desc, q.avail, q.used], vector: vector)
        queues[index] = q
        return q
    }

    /// setup_vq for a packed ring: the same registers, different areas (§4.1.4.3.2).
    @discardableResult
    public func setupPackedQueue(_ index: Int, size: UInt16, vector: UInt16? = nil) -> PackedDriverQueue {
        write(0x16, 2, UInt64(index))
        write(0x18, 2, UInt64(size))
        let q = PackedDriverQueue(index: index, size: size, machine: machine)
        programQueue(areas: [q.ring, q.driverEvent, q.deviceEvent], vector: vector)
        return q
    }

    private func programQueue(areas: [GuestAddress], vector: UInt16?) {
        for (off, a) in zip([UInt64(0x20), 0x28, 0x30], areas) {
            write(off, 4, a.raw & 0xFFFF_FFFF)
            write(off + 4, 4, a.raw >> 32)
        }
        if let vector { write(0x1A, 2, UInt64(vector)) }
        write(0x1C, 2, 1)
    }

    public func driverOK() { setStatus(Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK) }

    /// MSI-X on with vector v sending data 0x40 + v, config changes on vector 0.
    public func programVectors(queueCount: Int) {
        for v in 0 ... queueCount { function.programMSIX(vector: v, data: UInt32(0x40 + v)) }
        write(0x10, 2, 0)
    }

    /// The whole probe + open: features (filtered), queues 0..<count with MSI-X vectors
    /// (config 0, queue i → i+1) when `msix`, DRIVER_OK.
    public func bringUp(queueCount: Int? = nil, msix: Bool = true, resetting: Bool = true, choose: (UInt64) -> UInt64 = { $0 }) {
        let queueCount = queueCount ?? defaultQueueCount
        negotiate(resetting: resetting, choose)
        if msix { programVectors(queueCount: queueCount) }
        for i in 0 ..< queueCount { setupQueue(i, vector: msix ? UInt16(i + 1) : nil) }
        driverOK()
    }

    /// Probe + open with packed rings of `size` entries.
    public func bringUpPacked(queueCount: Int? = nil, size: UInt16 = 8, choose: (UInt64) -> UInt64 = { $0 }) -> [PackedDriverQueue] {
        let queueCount = queueCount ?? defaultQueueCount
        negotiate(choose)
        programVectors(queueCount: queueCount)
        let qs = (0 ..< queueCount).map { setupPackedQueue($0, size: size, vector: UInt16($0 + 1)) }
        driverOK()
        return qs
    }

    /// Linux's vp_notify: a 16-bit write of the queue index at its notify address.
    public func kick(_ index: Int) {
        let off = notifyCap.offset + UInt64(index) * UInt64(notifyCap.extra)
        function.write(bar: notifyCap.bar, offset: off, size: 2, value: UInt64(index))
    }

    /// MSI data values seen so far (vector v was programmed with data 0x40 + v).
    public var msiVectors: [Int] { machine.interrupts.messages.map { Int($0.data) - 0x40 } }

    // MARK: Buffers

    public func buffer(_ bytes: [UInt8]) -> GuestAddress {
        let a = machine.allocator.alloc(size: UInt64(max(bytes.count, 1)), align: 16)
        try? machine.memory.writeBytes(bytes, at: a)
        return a
    }

    /// A zeroed buffer of `size` bytes (for the device to write).
    public func buffer(zeroed size: Int) -> GuestAddress { buffer([UInt8](repeating: 0, count: size)) }

    public func bytes(at a: GuestAddress, _ n: Int) -> [UInt8] { (try? machine.memory.readBytes(at: a, count: n)) ?? [] }
}
