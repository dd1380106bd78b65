import Logging
import VMMCore

/// Interrupts into the in-kernel irqchip: INTx and ISA lines through KVM_IRQ_LINE (GSI =
/// IOAPIC pin for 0–23, ISA IRQs also reach the 8259), MSIs through KVM_SIGNAL_MSI.
public final class KVMInterruptController: InterruptController, @unchecked Sendable {
    private let vm: KVMVirtualMachine
    private let log: RateLimitedLogger

    public init(vm: KVMVirtualMachine, logger: Logger) {
        self.vm = vm
        self.log = RateLimitedLogger(logger)
    }

    public func setIRQ(_ line: Int, level: Bool) {
        guard (0 ..< 24).contains(line) else {
            log.warning("kvm.irq-line", "interrupt line \(line) is not an IOAPIC pin; dropped")
            return
        }
        do { try vm.setIRQLine(UInt32(line), level: level) } catch { log.warning("kvm.irq-line", "\(error)") }
    }

    public func signalMSI(address: UInt64, data: UInt32) {
        do { try vm.signalMSI(address: address, data: data) } catch { log.warning("kvm.msi", "\(error)") }
    }
}
