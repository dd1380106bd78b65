/// Where a machine's interrupts go: the in-kernel irqchip under KVM, a recorder in the
/// test kit, `IRQ raise/lower` lines in the qtest mode.
public protocol InterruptController: AnyObject, Sendable {
    /// Drives interrupt line (GSI) `line` to `level` (level-triggered, active high).
    func setIRQ(_ line: Int, level: Bool)
    /// Delivers a message-signalled interrupt: a 32-bit `data` write to `address`.
    func signalMSI(address: UInt64, data: UInt32)
}

/// Where a function's message interrupts go when the platform delivers them by vector
/// number rather than as memory writes: vfio-user signals an eventfd per vector, and its
/// client emulates the MSI-X table, the MSI capability's message and all masking itself
/// (QEMU's hw/vfio/pci.c), so the core's own table stays masked and must not gate them.
public protocol MessageVectorSink: AnyObject, Sendable {
    /// Vector `vector` of the function's MSI (`.msi`) or MSI-X (`.msix`) capability fired.
    func signal(_ kind: PCIInterrupts.Mode, vector: Int)
}

/// ORs the INTx outputs of every function that shares a line, so the controller only
/// sees a line go low when the last function lowers it (level semantics, PCI 3.0 §2.2.6).
final class SharedIRQLines: @unchecked Sendable {
    private let controller: InterruptController
    private let lock = DeviceLock()
    private var asserted: [Int: Set<ObjectIdentifier>] = [:]

    init(controller: InterruptController) { self.controller = controller }

    func set(line: Int, source: ObjectIdentifier, level: Bool) {
        lock.withLock {
            var set = asserted[line] ?? []
            let wasHigh = !set.isEmpty
            if level { set.insert(source) } else { set.remove(source) }
            asserted[line] = set
            let isHigh = !set.isEmpty
            if wasHigh != isHigh { controller.setIRQ(line, level: isHigh) }
        }
    }
}
