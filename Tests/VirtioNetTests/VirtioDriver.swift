import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// The virtio-net feature bits as a driver names them (virtio 1.2 §5.1.3).
enum NetF {
    static let csum: UInt64 = 1 << 0, guestCsum: UInt64 = 1 << 1, ctrlGuestOffloads: UInt64 = 1 << 2
    static let mtu: UInt64 = 1 << 3, mac: UInt64 = 1 << 5
    static let guestTSO4: UInt64 = 1 << 7, guestTSO6: UInt64 = 1 << 8, guestECN: UInt64 = 1 << 9, guestUFO: UInt64 = 1 << 10
    static let hostTSO4: UInt64 = 1 << 11, hostTSO6: UInt64 = 1 << 12, hostECN: UInt64 = 1 << 13, hostUFO: UInt64 = 1 << 14
    static let mrgRxbuf: UInt64 = 1 << 15, status: UInt64 = 1 << 16, ctrlVQ: UInt64 = 1 << 17, ctrlRX: UInt64 = 1 << 18
    static let ctrlRXExtra: UInt64 = 1 << 20, mq: UInt64 = 1 << 22, ctrlMACAddr: UInt64 = 1 << 23
    static let indirect: UInt64 = 1 << 28, eventIdx: UInt64 = 1 << 29, version1: UInt64 = 1 << 32
}

/// Where one virtio structure lives, as its capability says (§4.1.4).
struct VirtioCap {
    let bar: Int
    let offset: UInt64
    let length: UInt64
    let extra: UInt32
    let configOffset: Int
}

/// A driver-side view of one split virtqueue in guest memory, as Linux's virtio_ring builds it.
final class DriverQueue {
    let index: Int
    let size: UInt16
    let desc: GuestAddress, avail: GuestAddress, used: GuestAddress
    let memory: GuestMemory
    var availIdx: UInt16 = 0
    var lastUsed: UInt16 = 0
    var nextDesc: UInt16 = 0

    init(index: Int, size: UInt16, machine: TestMachine) {
        self.index = index
        self.size = size
        memory = machine.memory
        desc = machine.allocator.alloc(size: 16 * UInt64(size), align: 4096)
        avail = machine.allocator.alloc(size: 6 + 2 * UInt64(size), align: 2)
        used = machine.allocator.alloc(size: 6 + 8 * UInt64(size), align: 4096)
    }

    func writeDescriptor(_ i: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16, table: GuestAddress? = nil) {
        let base = (table ?? desc).raw + 16 * UInt64(i)
        try? memory.store(address, at: GuestAddress(base))
        try? memory.store(length, at: GuestAddress(base + 8))
        try? memory.store(flags, at: GuestAddress(base + 12))
        try? memory.store(next, at: GuestAddress(base + 14))
    }

    /// Writes a chain of descriptors (readable first, then writable) and returns its head.
    @discardableResult
    func addChain(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], publish: Bool = true) -> UInt16 {
        let head = nextDesc
        for (n, b) in buffers.enumerated() {
            let i = (head &+ UInt16(n)) % size
            let last = n == buffers.count - 1
            writeDescriptor(i, address: b.address.raw, length: b.length,
                            flags: (last ? 0 : 1) | (b.writable ? 2 : 0), next: (i &+ 1) % size)
        }
        nextDesc = (head &+ UInt16(buffers.count)) % size
        if publish { self.publish(head) }
        return head
    }

    /// One descriptor pointing at an indirect table holding `buffers` (§2.7.5.3).
    @discardableResult
    func addIndirect(_ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], allocator: GuestAllocator) -> UInt16 {
        let table = allocator.alloc(size: 16 * UInt64(buffers.count), align: 16)
        for (n, b) in buffers.enumerated() {
            let last = n == buffers.count - 1
            writeDescriptor(UInt16(n), address: b.address.raw, length: b.length,
                            flags: (last ? 0 : 1) | (b.writable ? 2 : 0), next: UInt16(n + 1), table: table)
        }
        let head = nextDesc
        writeDescriptor(head, address: table.raw, length: UInt32(16 * buffers.count), flags: 4, next: 0)
        nextDesc = (head &+ 1) % size
        publish(head)
        return head
    }

    /// Puts `head` in the avail ring and moves avail->idx.
    func publish(_ head: UInt16) {
        try? memory.store(head, at: GuestAddress(avail.raw + 4 + 2 * UInt64(availIdx % size)))
        availIdx &+= 1
        try? memory.store(availIdx, at: GuestAddress(avail.raw + 2))
    }

    func setAvailIndex(_ v: UInt16) {
        availIdx = v
        try? memory.store(v, at: GuestAddress(avail.raw + 2))
    }

    var usedIndex: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw + 2))) ?? 0 }
    var usedFlags: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw))) ?? 0 }
    /// avail_event, after the used ring (§2.7.10).
    var availEvent: UInt16 { (try? memory.load(UInt16.self, at: GuestAddress(used.raw + 4 + 8 * UInt64(size)))) ?? 0 }

    /// used_event, after the avail ring.
    func setUsedEvent(_ v: UInt16) { try? memory.store(v, at: GuestAddress(avail.raw + 4 + 2 * UInt64(size))) }
    func setAvailFlags(_ v: UInt16) { try? memory.store(v, at: GuestAddress(avail.raw)) }

    /// Used elements published since the last call.
    func takeUsed() -> [(id: UInt32, length: UInt32)] {
        var out: [(UInt32, UInt32)] = []
        let now = usedIndex
        while lastUsed != now {
            let base = used.raw + 4 + 8 * UInt64(lastUsed % size)
            let id = (try? memory.load(UInt32.self, at: GuestAddress(base))) ?? .max
            let len = (try? memory.load(UInt32.self, at: GuestAddress(base + 4))) ?? .max
            out.append((id, len))
            lastUsed &+= 1
        }
        return out
    }
}

/// What Linux's virtio_pci_modern + virtio_net do to a device, register by register.
final class VirtioNetDriver {
    let machine: TestMachine
    let nic: TestDevice
    var device: VirtioNet? { (nic.function.device as? VirtioNetDevice)?.device }
    var transport: VirtioPCITransport? { (nic.function.device as? VirtioNetDevice)?.transport }
    var endpoint: InMemoryEndpoint { nic.endpoint ?? InMemoryEndpoint() }
    private(set) var caps: [UInt8: VirtioCap] = [:]
    var queues: [Int: DriverQueue] = [:]
    var features: UInt64 = 0

    init(options: String = "", capabilities: BackendCapabilities? = nil, machine: TestMachine? = nil) throws {
        let m = try machine ?? TestMachine()
        self.machine = m
        if let capabilities { m.network.enqueue(InMemoryEndpoint(capabilities: capabilities)) }
        nic = try m.add(VirtioNetDevice.self, options: options)
        discoverCapabilities()
    }

    /// vp_modern_probe: walk the vendor capabilities (id 0x09), keep the first of each type.
    func discoverCapabilities() {
        var p = Int(nic.configRead(0x34, size: 1)) & 0xFC
        var hops = 0
        while p != 0 && hops < 48 {
            if nic.configRead(p, size: 1) == 0x09 {
                let type = UInt8(nic.configRead(p + 3, size: 1))
                if caps[type] == nil {
                    caps[type] = VirtioCap(bar: Int(nic.configRead(p + 4, size: 1)),
                                           offset: UInt64(nic.configRead(p + 8)), length: UInt64(nic.configRead(p + 12)),
                                           extra: nic.configRead(p + 2, size: 1) >= 20 ? nic.configRead(p + 16) : 0,
                                           configOffset: p)
                }
            }
            p = Int(nic.configRead(p + 1, size: 1)) & 0xFC
            hops += 1
        }
    }

    var common: VirtioCap { caps[1] ?? VirtioCap(bar: 0, offset: 0, length: 0, extra: 0, configOffset: 0) }
    var notifyCap: VirtioCap { caps[2] ?? VirtioCap(bar: 0, offset: 0x3000, length: 0, extra: 4, configOffset: 0) }
    var isrCap: VirtioCap { caps[3] ?? VirtioCap(bar: 0, offset: 0x1000, length: 1, extra: 0, configOffset: 0) }
    var deviceCap: VirtioCap { caps[4] ?? VirtioCap(bar: 0, offset: 0x2000, length: 0, extra: 0, configOffset: 0) }

    // MARK: Registers

    func read(_ offset: UInt64, _ size: Int) -> UInt64 { nic.read(bar: common.bar, offset: common.offset + offset, size: size) }
    func write(_ offset: UInt64, _ size: Int, _ v: UInt64) { nic.write(bar: common.bar, offset: common.offset + offset, size: size, value: v) }
    var status: UInt8 { UInt8(read(0x14, 1)) }
    func setStatus(_ s: UInt8) { write(0x14, 1, UInt64(s)) }
    func readISR() -> UInt8 { UInt8(truncatingIfNeeded: nic.read(bar: isrCap.bar, offset: isrCap.offset, size: 1)) }
    func config(_ offset: UInt64, _ size: Int) -> UInt64 { nic.read(bar: deviceCap.bar, offset: deviceCap.offset + offset, size: size) }

    var deviceFeatures: UInt64 {
        write(0x00, 4, 0)
        let low = read(0x04, 4)
        write(0x00, 4, 1)
        return low | read(0x04, 4) << 32
    }

    // MARK: Bring-up (virtio 1.2 §3.1.1)

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK and its check. Returns whether accepted.
    @discardableResult
    func negotiate(_ choose: (UInt64) -> UInt64 = { $0 }) -> Bool {
        setStatus(0)
        setStatus(1)
        setStatus(1 | 2)
        features = choose(deviceFeatures)
        write(0x08, 4, 0); write(0x0C, 4, features & 0xFFFF_FFFF)
        write(0x08, 4, 1); write(0x0C, 4, features >> 32)
        setStatus(1 | 2 | 8)
        return status & 8 != 0
    }

    /// vp_modern setup_vq: select, size, addresses in 32-bit halves, vector, enable.
    @discardableResult
    func setupQueue(_ index: Int, size: UInt16? = nil, vector: UInt16? = nil) -> DriverQueue {
        write(0x16, 2, UInt64(index))
        let max = UInt16(read(0x18, 2))
        let n = size ?? max
        write(0x18, 2, UInt64(n))
        let q = DriverQueue(index: index, size: n, machine: machine)
        for (off, a) in [(UInt64(0x20), q.desc), (0x28, q.avail), (0x30, q.used)] {
            write(off, 4, a.raw & 0xFFFF_FFFF)
            write(off + 4, 4, a.raw >> 32)
        }
        if let vector { write(0x1A, 2, UInt64(vector)) }
        write(0x1C, 2, 1)
        queues[index] = q
        return q
    }

    func driverOK() { setStatus(1 | 2 | 8 | 4) }

    /// The whole probe + open: features (filtered), queues 0..<count with MSI-X vectors
    /// (config 0, queue i → i+1) when `msix`, DRIVER_OK.
    func bringUp(queueCount: Int = 2, msix: Bool = true, choose: (UInt64) -> UInt64 = { $0 }) {
        negotiate(choose)
        if msix {
            for v in 0 ... queueCount { nic.programMSIX(vector: v, data: UInt32(0x40 + v)) }
            write(0x10, 2, 0)
        }
        for i in 0 ..< queueCount { setupQueue(i, vector: msix ? UInt16(i + 1) : nil) }
        driverOK()
    }

    /// Linux's vp_notify: a 16-bit write of the queue index at its notify address.
    func kick(_ index: Int) {
        let off = notifyCap.offset + UInt64(index) * UInt64(notifyCap.extra)
        nic.write(bar: notifyCap.bar, offset: off, size: 2, value: UInt64(index))
    }

    /// MSI data values seen so far (vector v was programmed with data 0x40 + v).
    var msiVectors: [Int] { machine.interrupts.messages.map { Int($0.data) - 0x40 } }

    // MARK: Buffers

    func buffer(_ bytes: [UInt8]) -> GuestAddress {
        let a = machine.allocator.alloc(size: UInt64(max(bytes.count, 1)), align: 16)
        try? machine.memory.writeBytes(bytes, at: a)
        return a
    }

    func bytes(at a: GuestAddress, _ n: Int) -> [UInt8] { (try? machine.memory.readBytes(at: a, count: n)) ?? [] }

    /// Queues one frame for TX as a header descriptor + frame descriptor and kicks.
    func send(_ frame: [UInt8], header: VirtioNetHeader = VirtioNetHeader(), queue: Int = 1, split: Bool = true) {
        let h = buffer(headerBytes(header))
        if split {
            queues[queue]?.addChain([(h, 12, false), (buffer(frame), UInt32(frame.count), false)])
        } else {
            queues[queue]?.addChain([(buffer(headerBytes(header) + frame), UInt32(12 + frame.count), false)])
        }
        kick(queue)
    }

    /// Posts `count` receive buffers of `size` bytes (one writable descriptor each).
    @discardableResult
    func postReceiveBuffers(_ count: Int, size: Int = 1526, queue: Int = 0, kick doKick: Bool = true) -> [GuestAddress] {
        var out: [GuestAddress] = []
        for _ in 0 ..< count {
            let a = machine.allocator.alloc(size: UInt64(size), align: 16)
            queues[queue]?.addChain([(a, UInt32(size), true)])
            out.append(a)
        }
        if doKick { kick(queue) }
        return out
    }
}

func headerBytes(_ h: VirtioNetHeader) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 12)
    out.withUnsafeMutableBytes { h.write(to: $0) }
    return out
}

func parseHeader(_ bytes: [UInt8]) -> VirtioNetHeader? { bytes.withUnsafeBytes { VirtioNetHeader($0) } }
