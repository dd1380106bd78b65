import VMMCore

/// A small device for the vfio-user tests: BAR0 registers that drive INTx, raise MSI-X
/// vectors and DMA a value into guest memory, so each platform duty can be checked alone.
///
/// | BAR0 offset | write                                 |
/// |-------------|---------------------------------------|
/// | 0x00        | INTx level (0 or 1)                   |
/// | 0x04        | raise MSI-X vector N                  |
/// | 0x08        | DMA address (reads back)              |
/// | 0x10        | store the value at the DMA address    |
/// | 0x18        | (read) the last DMA result: 1 ok, 2 failed |
final class ProbeDevice: PCIDevice {
    static let typeName = "probe"
    static let summary = "vfio-user test device"
    let context: PCIDeviceContext
    var dmaAddress: UInt64 = 0
    var dmaResult: UInt64 = 0
    var stored: [UInt64: UInt64] = [:]

    init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        self.context = context
        context.config.setIdentity(PCIIdentity(vendorID: 0x1234, deviceID: 0x5678, classCode: 0xFF_00_00))
        _ = context.config.declareBAR(0, .memory32(size: 0x1000))
        _ = context.config.declareBAR(2, .memory64(size: 0x4000))
        context.interrupts.useINTx()
        context.interrupts.addMSIX(vectors: 4, tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: 0x2000)
    }

    func reset() {
        dmaAddress = 0
        dmaResult = 0
        stored = [:]
    }

    func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        if bar == 0 && offset == 0x08 { return dmaAddress }
        if bar == 0 && offset == 0x18 { return dmaResult }
        return stored[offset] ?? 0
    }

    func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == 0 else { return }
        switch offset {
        case 0x00: context.interrupts.setINTx(value != 0)
        case 0x04: context.interrupts.raise(vector: Int(truncatingIfNeeded: value))
        case 0x08: dmaAddress = value
        case 0x10:
            dmaResult = (try? context.memory.store(UInt32(truncatingIfNeeded: value), at: GuestAddress(dmaAddress))) != nil ? 1 : 2
        default: stored[offset] = value
        }
    }
}
