import VMMCore

/// What the control socket may ask of the machine it serves: the KVM VM (`swiftvmm run`)
/// or the vfio-user server (`swiftvmm serve`). Calls come from the QMP thread.
public protocol QMPTarget: AnyObject, Sendable {
    /// `query-name` (nil: no name given).
    var name: String? { get }
    /// The PCI functions, for `query-pci`.
    var pciFunctions: [PCIFunction] { get }
    /// Pausing vCPUs (`stop`/`cont`/`query-cpus-fast`) exists only where there are vCPUs.
    var hasVCPUs: Bool { get }
    var vcpuCount: Int { get }
    var isRunning: Bool { get }
    func pause()
    func resume()
    /// `system_reset`.
    func reset()
    /// Whether `reset()` ends the machine, as a VM without reboot does (QEMU's
    /// `-no-reboot`): then the client hears SHUTDOWN (reason `host-qmp-system-reset`) and
    /// no RESET, as from QEMU; otherwise RESET.
    var resetEndsMachine: Bool { get }
    /// `quit`: the process ends with status 0, backends released.
    func quit()
}
