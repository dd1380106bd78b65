#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// Why a VM stopped, and the process exit status it maps to.
public enum MachineExit: Sendable, Equatable, CustomStringConvertible {
    /// The guest reset the machine (i8042 reset line, KVM reset event).
    case reset
    /// The guest powered off (KVM shutdown system event).
    case powerOff
    /// A vCPU executed HLT with interrupts off and nothing can wake it.
    case halted(cpu: Int)
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    case tripleFault(cpu: Int, registers: String)
    /// KVM could not run the guest (internal error, failed entry, unexpected exit).
    case vcpuFailure(cpu: Int, detail: String, registers: String)
    /// The VMM was asked to stop (SIGINT, SIGTERM).
    case signal(Int32)
    /// The user typed the console escape (Ctrl-A x) on an interactive console.
    case consoleQuit
    /// A control-socket client asked (QMP `quit`, or `system_reset`: a reset ends the VM
    /// as a guest reset does).
    case controlRequest(String)

    /// 0 for a guest-initiated reset or poweroff or a console quit; 128+n for signal n; 1 otherwise.
    public var exitStatus: Int32 {
        switch self {
        case .reset, .powerOff, .halted, .consoleQuit, .controlRequest: 0
        case let .signal(n): 128 + n
        case .tripleFault, .vcpuFailure: 1
        }
    }

    public var description: String {
        switch self {
        case .reset: "guest reset the machine"
        case .powerOff: "guest powered off"
        case let .halted(c): "vCPU \(c) halted"
        case let .tripleFault(c, regs): "vCPU \(c): triple fault (KVM_EXIT_SHUTDOWN)\n\(regs)"
        case let .vcpuFailure(c, d, regs): "vCPU \(c): \(d)\n\(regs)"
        case let .signal(n): "stopped by signal \(n)"
        case .consoleQuit: "stopped from the console (Ctrl-A x)"
        case let .controlRequest(what): "stopped by a control-socket \(what)"
        }
    }
}

/// The first stop reason wins; whoever runs the machine waits for it.
final class StopLatch: @unchecked Sendable {
    private let condition = ThreadCondition()
    private var reason: MachineExit?  // guarded by `condition`

    var isStopped: Bool { condition.withLock { reason != nil } }

    func stop(_ why: MachineExit) {
        condition.withLock {
            guard reason == nil else { return }
            reason = why
            condition.broadcast()
        }
    }

    func wait() -> MachineExit {
        condition.withLock {
            while true {
                if let reason { return reason }
                _ = condition.wait { reason != nil }
            }
        }
    }
}
