import Synchronization
import VMMCore

/// A small PCI device for exercising the core the way a ported bhyve device would use it.
///
/// BARs: 0 = 32-bit MMIO 4 KiB (registers), 1 = I/O 32 bytes (same registers),
/// 2/3 = 64-bit prefetchable MMIO 16 KiB (MSI-X table at 0, PBA at 0x800 when `msix=`),
/// 4 = 32-bit prefetchable MMIO 64 KiB (plain RAM-like scratch).
///
/// Registers (BAR0 and BAR1): 0x0 scratch (read/write), 0x4 write N → raise vector N,
/// 0x8 write → INTx level (nonzero = asserted), 0xC number of register accesses so far.
final class SampleDevice: PCIDevice {
    static let typeName = "sample"
    static let summary = "test device for the core's register-level tests"
    static let optionHelp = [OptionHelp("msi", "N", "MSI vectors"), OptionHelp("msix", "N", "MSI-X vectors"),
                             OptionHelp("intx", "on|off", "use INTA"), OptionHelp("mac", "MAC", "an address"),
                             OptionHelp("vendor", "ID", "PCI vendor ID")]

    static let vendorID: UInt16 = 0x1B36
    static let deviceID: UInt16 = 0x00F0

    let context: PCIDeviceContext
    let mac: MACAddress?
    /// Every BAR access the device saw: (bar, offset, size, write).
    private(set) var accesses: [(bar: Int, offset: UInt64, size: Int, write: Bool)] = []
    private var scratch: UInt64 = 0
    private var bulk = [UInt8](repeating: 0, count: 0x1_0000)
    private(set) var resets = 0
    private(set) var shutdowns = 0

    init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        self.context = context
        let msi = try options.takeInteger("msi", in: 0 ... 32) ?? 0
        let msix = try options.takeInteger("msix", in: 0 ... 64) ?? 0
        let intx = try options.takeBool("intx") ?? true
        mac = try options.takeMAC()
        let vendor = try options.takeInteger("vendor", in: UInt16(0) ... UInt16.max) ?? Self.vendorID
        context.config.setIdentity(PCIIdentity(vendorID: vendor, deviceID: Self.deviceID, subsystemVendorID: 0x1AF4,
                                               subsystemID: 0x1100, revision: 2, classCode: 0xFF_00_00))
        context.config.declareBAR(0, .memory32(size: 0x1000))
        context.config.declareBAR(1, .io(size: 32))
        context.config.declareBAR(2, .memory64(size: 0x4000, prefetchable: true))
        context.config.declareBAR(4, .memory32(size: 0x1_0000, prefetchable: true))
        if intx { context.interrupts.useINTx() }
        if msi > 0 { context.interrupts.addMSI(vectors: msi) }
        if msix > 0 {
            context.interrupts.addMSIX(vectors: msix, tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: 0x800)
        }
    }

    func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        accesses.append((bar, offset, size, false))
        if bar == 4 { return bulkRead(offset, size) }
        switch offset {
        case 0x0: return scratch
        case 0xC: return UInt64(accesses.count)
        default: return 0
        }
    }

    func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        accesses.append((bar, offset, size, true))
        if bar == 4 { return bulkWrite(offset, size, value) }
        switch offset {
        case 0x0: scratch = value
        case 0x4: context.interrupts.raise(vector: Int(truncatingIfNeeded: value))
        case 0x8: context.interrupts.setINTx(value != 0)
        default: break
        }
    }

    private func bulkRead(_ offset: UInt64, _ size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0 ..< size {
            let o = Int(offset) + i
            guard o < bulk.count else { break }
            v |= UInt64(bulk[o]) << (8 * UInt64(i))
        }
        return v
    }

    private func bulkWrite(_ offset: UInt64, _ size: Int, _ value: UInt64) {
        for i in 0 ..< size {
            let o = Int(offset) + i
            guard o < bulk.count else { break }
            bulk[o] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
        }
    }

    func reset() { resets += 1; scratch = 0 }
    func shutdown() { shutdowns += 1 }
}
