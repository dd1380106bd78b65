import E1000
import FuzzSupport
import VMMCore
import VMMNet
import VMMTestKit

/// Fuzz target 4: the whole e1000 register surface (Intel 8254x SDM §13) with the rings set
/// up first, so descriptor processing is reached: register reads and writes of every size
/// at any offset of BAR0 and through IOADDR/IODATA, descriptors written by the input
/// (legacy, context with absurd TSO values, data), tail bumps, frames from the backend,
/// guest memory rewritten under the device, link changes and virtual time.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzE1000(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    // Half the inputs run against a backend that finishes offloads (TAP-like).
    let backend = input.bool() ? NICScript.offloadingBackend : BackendCapabilities()
    guard let script = NICScript(E1000Device.self, backend: backend) else {
        fuzzCheck(false, "cannot create an e1000")
        return 0
    }
    let nic = script.device
    let rxRing: UInt64 = 0x1_0000, txRing: UInt64 = 0x2_0000, buffers: UInt64 = 0x3_0000
    let descriptors = UInt32(8) << UInt32(input.byte() % 4) // 8 … 64
    // A driver's bring-up (e1000_configure_rx/tx): rings, buffers, enables, interrupts.
    for i in 0 ..< UInt64(descriptors) {
        try? script.machine.memory.store(buffers + i * 0x800, at: GuestAddress(rxRing + 16 * i))
    }
    func reg(_ offset: UInt64, _ value: UInt32) { nic.write32(bar: 0, offset: offset, value) }
    reg(0x0000, 0x40 | (input.bool() ? 1 << 30 : 0))               // CTRL: SLU, maybe VME
    reg(0x00D0, 0x1_F6DF)                                          // IMS: everything
    reg(0x2800, UInt32(rxRing)); reg(0x2804, 0); reg(0x2808, descriptors * 16)
    reg(0x2810, 0); reg(0x2818, descriptors - 1)
    reg(0x3800, UInt32(txRing)); reg(0x3804, 0); reg(0x3808, descriptors * 16); reg(0x3810, 0); reg(0x3818, 0)
    reg(0x5000, 0x300)                                             // RXCSUM: IP + TCP/UDP
    reg(0x0100, 0x2 | 0x8 | 0x8000 | (input.bool() ? 1 << 26 : 0) | UInt32(input.byte() & 0x3) << 16) // RCTL
    reg(0x0400, 0x2 | 0x8)                                          // TCTL: EN, PSP
    var txTail: UInt32 = 0

    var ops = 0
    while !input.isExhausted && ops < 192 {
        ops += 1
        let choice = input.byte()
        switch choice % 12 {
        case 0, 1: // a transmit descriptor, then the tail moves past it
            let slot = UInt64(txTail % descriptors)
            let kind = input.byte() % 4
            var low = input.bool() ? buffers + UInt64(input.integer(UInt16.self)) : input.integer(UInt64.self)
            var high = UInt64(input.integer(UInt32.self)) | UInt64(input.integer(UInt32.self)) << 32
            switch kind {
            case 0: high = (high & ~(0xF << 20)) | 1 << 20 | 1 << 29 | 1 << 24   // data descriptor (DTYP 1, DEXT), EOP
            case 1: high = (high & ~(0xF << 20)) | 0x0 << 20 | 1 << 29            // context descriptor (TSO values from input)
                low = input.integer(UInt64.self)
            case 2: high = (high & 0xFFFF_FFFF_FFFF_0000) | UInt64(input.integer(UInt16.self) % 2048) | 1 << 24 // legacy, EOP
            default: break
            }
            try? script.machine.memory.store(low, at: GuestAddress(txRing + 16 * slot))
            try? script.machine.memory.store(high, at: GuestAddress(txRing + 16 * slot + 8))
            txTail = (txTail + 1) % descriptors
            if input.byte() % 4 != 0 { reg(0x3818, txTail) }
        case 2: // the receive tail: give buffers back (or any value at all)
            reg(0x2818, input.bool() ? input.integer(UInt32.self) % descriptors : input.integer(UInt32.self))
        case 3, 4: // any register, any size, any offset in the 128 KiB window
            let offset = UInt64(input.integer(UInt32.self)) % 0x2_0000
            // 3/5/6/7 too: a KVM MMIO exit can carry them (finding F1), so devices must cope.
            let width = input.byte() % 8 == 0 ? [3, 5, 6, 7][input.choose(4)] : input.accessSize()
            if input.bool() { nic.write(bar: 0, offset: offset, size: width, value: input.integer(UInt64.self)) }
            else { _ = nic.read(bar: 0, offset: offset, size: width) }
        case 5: // a register the driver uses, any value (RST, ring bases/lengths, EERD, MDIC, ITR…)
            let interesting: [UInt64] = [0x0, 0x8, 0x10, 0x14, 0x18, 0x20, 0xC0, 0xC4, 0xC8, 0xD0, 0xD8, 0x100, 0x400,
                                         0x2800, 0x2804, 0x2808, 0x2810, 0x2818, 0x2820, 0x282C, 0x3800, 0x3804, 0x3808,
                                         0x3810, 0x3818, 0x3820, 0x382C, 0x5000, 0x5200, 0x5400, 0x5404, 0x5600, 0x4000, 0x40FC]
            reg(interesting[input.choose(interesting.count)], input.integer(UInt32.self))
        case 6: // the I/O window: IOADDR then IODATA, any sizes
            let port = UInt64(input.byte() % 8)
            let width = [1, 2, 4][input.choose(3)]
            if input.bool() { nic.write(bar: 1, offset: port, size: width, value: UInt64(input.integer(UInt32.self))) }
            else { _ = nic.read(bar: 1, offset: port, size: width) }
        case 7: // interrupt cause read (read-to-clear), as the ISR does
            _ = nic.read32(bar: 0, offset: 0xC0)
        default:
            if !script.guestMove(choice % 12 - 8 + UInt8(input.byte() % 2) * 4, &input) { _ = nic.read32(bar: 0, offset: 0x8) }
        }
    }
    script.checkActionBudget()
    return 0
}
