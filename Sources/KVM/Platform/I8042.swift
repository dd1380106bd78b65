import VMMCore

/// The part of the 8042 keyboard controller a VM needs: the CPU reset line (command 0xFE,
/// or any pulse-output-port command with bit 0 clear), and enough of the command set
/// (read/write controller configuration, self test) that Linux's probe finishes quickly.
/// No keyboard is attached.
public final class I8042: @unchecked Sendable {
    public static let dataPort: UInt64 = 0x60
    public static let commandPort: UInt64 = 0x64

    private let lock = DeviceLock()
    private let onReset: @Sendable () -> Void
    private var output: UInt8?
    private var configuration: UInt8 = 0x01
    private var pendingCommand: UInt8?

    public init(onReset: @escaping @Sendable () -> Void) { self.onReset = onReset }

    /// The handler for one of its two ports (each mapped as a one-byte range, so the offset is always 0).
    public func handler(for port: UInt64) -> AccessHandler { PortView(controller: self, port: port) }

    func readPort(_ port: UInt64) -> UInt64 {
        lock.withLock {
            if port == Self.commandPort {
                // Status: OBF when a byte waits, system flag set (self test passed).
                return UInt64((output == nil ? 0 : 0x01) | 0x04)
            }
            let v = output ?? 0
            output = nil
            return UInt64(v)
        }
    }

    func writePort(_ port: UInt64, _ value: UInt8) {
        let reset: Bool = lock.withLock {
            if port == Self.dataPort {
                switch pendingCommand {
                case 0x60: configuration = value
                case 0xD1: if value & 0x01 == 0 { pendingCommand = nil; return true } // output port bit 0: reset
                default: break // keyboard commands: no keyboard attached
                }
                pendingCommand = nil
                return false
            }
            switch value {
            case 0x20: output = configuration
            case 0x60, 0xD1: pendingCommand = value
            case 0xAA: output = 0x55 // controller self test passed
            case 0xA9, 0xAB: output = 0x00 // interface tests passed
            case 0xF0 ... 0xFF where value & 0x01 == 0: return true // pulse output bit 0: CPU reset
            default: break
            }
            return false
        }
        if reset { onReset() }
    }

    private final class PortView: AccessHandler, @unchecked Sendable {
        let controller: I8042
        let port: UInt64
        init(controller: I8042, port: UInt64) { self.controller = controller; self.port = port }
        func read(offset: UInt64, size: Int) -> UInt64 { controller.readPort(port) }
        func write(offset: UInt64, size: Int, value: UInt64) { controller.writePort(port, UInt8(truncatingIfNeeded: value)) }
    }
}
