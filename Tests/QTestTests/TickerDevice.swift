import VMMCore

/// A device for protocol tests: a register, a virtual-time timer that raises INTx or an
/// MSI-X message, so `clock_step`, `IRQ raise/lower` and MSI writes can be observed.
///
/// BAR0 (MMIO 4 KiB): 0x0 scratch; 0x4 write N → fire after N ns; 0x8 write → lower INTx;
/// 0xC times fired; MSI-X table at 0x800, PBA at 0xC00 (2 vectors). BAR1: I/O 16 bytes, same
/// registers. When it fires it raises vector 0 in MSI-X mode, else asserts INTA.
final class TickerDevice: PCIDevice {
    static let typeName = "ticker"
    static let summary = "qtest protocol test device"
    private let context: PCIDeviceContext
    private var timer: DeviceTimer?
    private var scratch: UInt64 = 0
    private var fired: UInt64 = 0

    init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        self.context = context
        context.config.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x00F1, classCode: 0xFF_00_00))
        context.config.declareBAR(0, .memory32(size: 0x1000))
        context.config.declareBAR(1, .io(size: 16))
        context.interrupts.useINTx()
        context.interrupts.addMSIX(vectors: 2, tableBAR: 0, tableOffset: 0x800, pbaBAR: 0, pbaOffset: 0xC00)
        timer = DeviceTimer(clock: context.clock, lock: context.lock) { [weak self] in self?.fire() }
    }

    private func fire() {
        fired += 1
        if context.interrupts.mode == .msix { context.interrupts.raise(vector: 0) } else { context.interrupts.setINTx(true) }
    }

    func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0x0: scratch
        case 0xC: fired
        default: 0
        }
    }

    func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0x0: scratch = value
        case 0x4: timer?.arm(after: value)
        case 0x8: context.interrupts.setINTx(false)
        default: break
        }
    }

    func shutdown() { timer?.cancel() }
}
