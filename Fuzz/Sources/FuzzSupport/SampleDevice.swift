import VMMCore

/// A PCI function with one of everything the core emulates for a device: a 32-bit
/// memory BAR, an I/O BAR, a 64-bit prefetchable BAR holding the MSI-X table and PBA,
/// MSI, MSI-X and INTx. Its registers are plain storage; writes to two "doorbell"
/// registers make it raise a vector or drive INTx, so a fuzzer reaches the interrupt
/// paths through the guest-visible surface alone. It also checks what the bus promises
/// every device: accesses arrive with a size of 1/2/4/8 and lie wholly inside the BAR.
public final class FuzzSampleDevice: PCIDevice {
    public static let typeName = "fuzz-sample"
    public static let summary = "register storage with every BAR kind, MSI, MSI-X and INTx (fuzzing only)"
    public static let barSizes: [Int: UInt64] = [0: 0x1000, 1: 0x20, 2: 0x4000]
    /// BAR0 offset 0x100: write N → raise vector N; 0x104: write → set INTx to bit 0.
    public static let raiseRegister: UInt64 = 0x100, intxRegister: UInt64 = 0x104

    private let context: PCIDeviceContext
    private var storage: [Int: [UInt8]]

    public init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        self.context = context
        storage = Self.barSizes.mapValues { [UInt8](repeating: 0, count: Int($0)) }
        context.config.declareBAR(0, .memory32(size: Self.barSizes[0] ?? 0))
        context.config.declareBAR(1, .io(size: Self.barSizes[1] ?? 0))
        context.config.declareBAR(2, .memory64(size: Self.barSizes[2] ?? 0, prefetchable: true))
        context.interrupts.useINTx()
        context.interrupts.addMSI(vectors: 4)
        context.interrupts.addMSIX(vectors: 8, tableBAR: 2, tableOffset: 0, pbaBAR: 2, pbaOffset: 0x800)
    }

    private func checkAccess(_ bar: Int, _ offset: UInt64, _ size: Int) -> Bool {
        guard let barSize = Self.barSizes[bar] else {
            fuzzCheck(false, "access to undeclared BAR\(bar)")
            return false
        }
        fuzzCheck([1, 2, 4, 8].contains(size), "access of size \(size) reached a device")
        fuzzCheck(offset < barSize && UInt64(size) <= barSize - offset, "BAR\(bar) access at +\(offset)/\(size) outside the BAR")
        return true
    }

    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard checkAccess(bar, offset, size), let bytes = storage[bar] else { return 0 }
        var v: UInt64 = 0
        for i in 0 ..< size { v |= UInt64(bytes[Int(offset) + i]) << (8 * UInt64(i)) }
        return v
    }

    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard checkAccess(bar, offset, size) else { return }
        for i in 0 ..< size { storage[bar]?[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        guard bar == 0 else { return }
        if offset == Self.raiseRegister {
            // Any vector number, including ones the device does not have: the core must cope.
            context.interrupts.raise(vector: Int(truncatingIfNeeded: Int32(bitPattern: UInt32(truncatingIfNeeded: value))))
        } else if offset == Self.intxRegister {
            context.interrupts.setINTx(value & 1 == 1)
        }
    }

    public func reset() {
        for k in storage.keys { storage[k] = [UInt8](repeating: 0, count: storage[k]?.count ?? 0) }
    }
}
