import VMMCore

/// One delayed interrupt of the 8254x: receive (RDTR/RADV → RXT0, SDM §3.2.7.1) or
/// transmit (TIDV/TADV → TXDW, §3.4.x). Each frame restarts the packet timer; the
/// absolute timer, started by the first frame, bounds how long the interrupt can wait.
/// Both registers count 1.024 µs ticks in their low 16 bits; 0 disables that timer.
final class InterruptDelay {
    static let tick: UInt64 = 1024

    private let packetTimer: DeviceTimer
    private let absoluteTimer: DeviceTimer

    init(packetTimer: DeviceTimer, absoluteTimer: DeviceTimer) {
        self.packetTimer = packetTimer
        self.absoluteTimer = absoluteTimer
    }

    var isArmed: Bool { packetTimer.isArmed || absoluteTimer.isArmed }

    /// A frame completed: (re)starts the timers from the two registers' values. Returns
    /// true when there is no packet delay and the interrupt is due now.
    func frameCompleted(packetDelay: UInt32, absoluteDelay: UInt32) -> Bool {
        let packet = UInt64(packetDelay & 0xFFFF)
        guard packet != 0 else { return true }
        packetTimer.arm(after: packet * Self.tick)
        let absolute = UInt64(absoluteDelay & 0xFFFF)
        if absolute != 0, !absoluteTimer.isArmed {
            absoluteTimer.arm(after: absolute * Self.tick)
        }
        return false
    }

    func cancel() {
        packetTimer.cancel()
        absoluteTimer.cancel()
    }
}
