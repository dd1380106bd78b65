import FuzzSupport
import VMMCore
import VMMNet
import VMMTestKit
import VirtioNet

/// Fuzz target 5: virtio-net's whole surface (virtio 1.2 §4.1, §5.1) after a driver's
/// bring-up (features, RX/TX/control queues, DRIVER_OK), so chain processing is reached:
/// descriptors and avail entries written by the input (loops, indirect tables, bad
/// lengths, runaway avail indices), notifications, any BAR0 access of any size (common
/// config, ISR, device config, notify, MSI-X), frames from the backend with hostile
/// headers, guest memory rewritten under the device, link changes, resets.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioNet(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    // Half the inputs run against a backend that finishes offloads (TAP-like).
    let backend = input.bool() ? NICScript.offloadingBackend : BackendCapabilities()
    guard let script = NICScript(VirtioNetDevice.self, backend: backend) else {
        fuzzCheck(false, "cannot create a virtio-net")
        return 0
    }
    var driver = Driver(nic: script.device, memory: script.machine.memory)
    driver.bringUp(featureMask: input.integer(UInt64.self), msix: input.bool())
    var ops = 0
    while !input.isExhausted && ops < 192 {
        ops += 1
        let choice = input.byte()
        switch choice % 12 {
        case 0, 1, 2: // a chain on a queue, made available and kicked
            let q = input.choose(Driver.queueCount)
            let n = 1 + Int(input.byte() % 4)
            let head = driver.nextDescriptor[q]
            for k in 0 ..< n {
                let slot = (head + UInt16(k)) % Driver.queueSize
                let address = input.bool() ? Driver.buffers + UInt64(input.integer(UInt16.self)) : input.integer(UInt64.self)
                let length = input.bool() ? UInt32(input.integer(UInt16.self) % 4096) : input.integer(UInt32.self)
                var flags = UInt16(input.byte() & 0x7)            // NEXT, WRITE, INDIRECT from the input…
                if k < n - 1 { flags |= 1 } else if input.byte() % 4 != 0 { flags &= ~1 } // …mostly well-formed
                let next = input.byte() % 8 == 0 ? input.integer(UInt16.self) : (slot + 1) % Driver.queueSize
                driver.writeDescriptor(queue: q, slot: slot, address: address, length: length, flags: flags, next: next)
            }
            driver.nextDescriptor[q] = (head + UInt16(n)) % Driver.queueSize
            driver.makeAvailable(queue: q, head: input.byte() % 8 == 0 ? input.integer(UInt16.self) : head)
            driver.notify(queue: q)
        case 3: // the avail index runs away
            driver.setAvailIndex(queue: input.choose(Driver.queueCount), input.integer(UInt16.self))
            driver.notify(queue: input.choose(Driver.queueCount + 2))
        case 4, 5: // any BAR0 access of any size
            let offset = UInt64(input.integer(UInt16.self)) % 0x8000
            // 3/5/6/7 too: a KVM MMIO exit can carry them (finding F1), so devices must cope.
            let width = input.byte() % 8 == 0 ? [3, 5, 6, 7][input.choose(4)] : input.accessSize()
            if input.bool() { script.device.write(bar: 0, offset: offset, size: width, value: input.integer(UInt64.self)) }
            else { _ = script.device.read(bar: 0, offset: offset, size: width) }
        case 6: // common configuration registers with any value (status, queue fields, features)
            let offset = UInt64(input.byte() % 0x3C)
            script.device.write(bar: 0, offset: offset, size: [1, 2, 4][input.choose(3)], value: UInt64(input.integer(UInt32.self)))
        case 7: // reset and bring-up again
            driver.bringUp(featureMask: input.integer(UInt64.self), msix: input.bool())
        default:
            if !script.guestMove(choice % 12 - 8 + UInt8(input.byte() % 2) * 4, &input) { _ = script.device.read8(bar: 0, offset: 0x1000) }
        }
    }
    script.checkActionBudget()
    return 0
}

/// The driver side, as Linux's virtio_pci_modern + virtio_net set up the device, written
/// from the spec's register layout (virtio 1.2 §4.1.4.3) so it exercises the transport's
/// real guest interface.
struct Driver {
    static let queueCount = 3 // receiveq, transmitq, controlq
    static let queueSize: UInt16 = 16
    static let rings: UInt64 = 0x1_0000
    static let buffers: UInt64 = 0x2_0000
    let nic: TestDevice
    let memory: GuestMemory
    var nextDescriptor = [UInt16](repeating: 0, count: Driver.queueCount)
    var availIndex = [UInt16](repeating: 0, count: Driver.queueCount)

    init(nic: TestDevice, memory: GuestMemory) { self.nic = nic; self.memory = memory }

    func descriptorTable(_ q: Int) -> UInt64 { Driver.rings + UInt64(q) * 0x1000 }
    func availRing(_ q: Int) -> UInt64 { descriptorTable(q) + 0x400 }
    func usedRing(_ q: Int) -> UInt64 { descriptorTable(q) + 0x800 }

    private func common(_ offset: UInt64, _ size: Int, _ value: UInt64) { nic.write(bar: 0, offset: offset, size: size, value: value) }

    mutating func bringUp(featureMask: UInt64, msix: Bool) {
        common(0x14, 1, 0)                 // reset
        common(0x14, 1, 1 | 2)             // ACKNOWLEDGE | DRIVER
        common(0x00, 4, 0); let low = nic.read32(bar: 0, offset: 0x04)
        common(0x00, 4, 1); let high = nic.read32(bar: 0, offset: 0x04)
        let offered = UInt64(low) | UInt64(high) << 32
        let wanted = offered & (featureMask | 1 << 32)  // VERSION_1 always
        common(0x08, 4, 0); common(0x0C, 4, wanted & 0xFFFF_FFFF)
        common(0x08, 4, 1); common(0x0C, 4, wanted >> 32)
        common(0x14, 1, 1 | 2 | 8)         // FEATURES_OK
        if msix {
            for v in 0 ..< 4 { nic.programMSIX(vector: v, data: UInt32(0x40 + v)) }
            common(0x10, 2, 3)
        }
        for q in 0 ..< Driver.queueCount {
            try? memory.fill(GuestAddress(descriptorTable(q)), length: 0x1000, with: 0)
            common(0x16, 2, UInt64(q))
            common(0x18, 2, UInt64(Driver.queueSize))
            if msix { common(0x1A, 2, UInt64(q)) }
            common(0x20, 8, descriptorTable(q))
            common(0x28, 8, availRing(q))
            common(0x30, 8, usedRing(q))
            common(0x1C, 2, 1)
        }
        nextDescriptor = [UInt16](repeating: 0, count: Driver.queueCount)
        availIndex = [UInt16](repeating: 0, count: Driver.queueCount)
        common(0x14, 1, 1 | 2 | 8 | 4)     // DRIVER_OK
    }

    func writeDescriptor(queue q: Int, slot: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let d = GuestAddress(descriptorTable(q) + 16 * UInt64(slot))
        try? memory.store(address, at: d)
        try? memory.store(length, at: GuestAddress(d.raw + 8))
        try? memory.store(flags, at: GuestAddress(d.raw + 12))
        try? memory.store(next, at: GuestAddress(d.raw + 14))
    }

    mutating func makeAvailable(queue q: Int, head: UInt16) {
        try? memory.store(head, at: GuestAddress(availRing(q) + 4 + 2 * UInt64(availIndex[q] % Driver.queueSize)))
        availIndex[q] &+= 1
        try? memory.store(availIndex[q], at: GuestAddress(availRing(q) + 2))
    }

    mutating func setAvailIndex(queue q: Int, _ value: UInt16) {
        availIndex[q] = value
        try? memory.store(value, at: GuestAddress(availRing(q) + 2))
    }

    /// The notify register of queue `q` (queue_notify_off = q, multiplier 4, at 0x3000).
    func notify(queue q: Int) { nic.write16(bar: 0, offset: 0x3000 + 4 * UInt64(q), UInt16(truncatingIfNeeded: q)) }
}
