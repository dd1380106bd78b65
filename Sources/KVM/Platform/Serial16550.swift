import VMMCore

/// A 16550A UART (National Semiconductor PC16550D data sheet): the guest's console on
/// COM1. Transmission is instantaneous (THR is always empty again), the receive FIFO holds
/// 16 bytes, and the interrupt output follows IER and the pending causes (§8.6, table 4).
public final class Serial16550: AccessHandler, @unchecked Sendable {
    public static let com1Port: UInt64 = 0x3F8
    public static let com1IRQ = 4
    static let fifoSize = 16

    private let lock = DeviceLock()
    private let output: @Sendable (UInt8) -> Void
    private let setLine: @Sendable (Bool) -> Void
    /// Called (outside the lock) when the receive FIFO has room again after being full.
    public var onRoomForInput: (@Sendable () -> Void)?

    private var rx: [UInt8] = []
    private var ier: UInt8 = 0
    private var lcr: UInt8 = 0x03 // 8N1
    private var mcr: UInt8 = 0
    private var scr: UInt8 = 0
    private var dll: UInt8 = 0x0C // 9600 baud
    private var dlm: UInt8 = 0
    private var fifoEnabled = false
    /// THR-empty interrupt pending (cleared by reading IIR while it is the source, or writing THR).
    private var threPending = false
    private var lineHigh = false

    public init(output: @escaping @Sendable (UInt8) -> Void, setLine: @escaping @Sendable (Bool) -> Void) {
        self.output = output
        self.setLine = setLine
    }

    private var dlab: Bool { lcr & 0x80 != 0 }
    private var loopback: Bool { mcr & 0x10 != 0 }

    // MARK: Host side

    /// Offers host input; returns how many bytes fit in the receive FIFO.
    public func receive(_ bytes: some Collection<UInt8>) -> Int {
        lock.withLock {
            let room = Self.fifoSize - rx.count
            let taken = bytes.prefix(max(0, room))
            rx.append(contentsOf: taken)
            updateLine()
            return taken.count
        }
    }

    /// Free bytes in the receive FIFO.
    public var inputRoom: Int { lock.withLock { Self.fifoSize - rx.count } }
    public var hasRoomForInput: Bool { inputRoom > 0 }

    // MARK: Registers (data sheet table 2)

    /// A wider access is that many byte accesses to consecutive registers, as QEMU's
    /// memory core splits it for a byte-wide device (a word write with DLAB set writes
    /// DLL and DLM).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size > 1 else { return UInt64(readByte(offset: offset)) }
        var value: UInt64 = 0
        for i in 0 ..< min(size, 8) { value |= UInt64(readByte(offset: offset &+ UInt64(i))) << (8 * UInt64(i)) }
        return value
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size > 1 else { return writeByte(offset: offset, UInt8(truncatingIfNeeded: value)) }
        for i in 0 ..< min(size, 8) { writeByte(offset: offset &+ UInt64(i), UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }

    private func readByte(offset: UInt64) -> UInt8 {
        var wakeInput = false
        let value: UInt8 = lock.withLock {
            let v: UInt8
            switch offset {
            case 0:
                if dlab { v = dll } else {
                    let wasFull = rx.count >= Self.fifoSize
                    v = rx.isEmpty ? 0 : rx.removeFirst()
                    wakeInput = wasFull && rx.count < Self.fifoSize
                }
            case 1: v = dlab ? dlm : ier
            case 2: v = interruptIdentification(consume: true)
            case 3: v = lcr
            case 4: v = mcr
            case 5: v = (rx.isEmpty ? 0 : 0x01) | 0x60 // DR, THRE, TEMT
            case 6: v = modemStatus()
            case 7: v = scr
            default: v = 0xFF
            }
            updateLine()
            return v
        }
        if wakeInput { onRoomForInput?() }
        return value
    }

    private func writeByte(offset: UInt64, _ byte: UInt8) {
        var wakeInput = false
        lock.withLock {
            switch offset {
            case 0:
                if dlab { dll = byte } else {
                    if loopback {
                        if rx.count < Self.fifoSize { rx.append(byte) }
                    } else {
                        output(byte)
                    }
                    threPending = true // transmitted at once: THR is empty again
                }
            case 1:
                if dlab { dlm = byte } else {
                    let enablingTHRE = byte & 0x02 != 0 && ier & 0x02 == 0
                    ier = byte & 0x0F
                    if enablingTHRE { threPending = true }
                }
            case 2:
                fifoEnabled = byte & 0x01 != 0
                if byte & 0x02 != 0 {
                    // A full FIFO had stopped the host's input; emptied here, nothing else
                    // would start it again (Linux's serial8250_clear_fifos at every open
                    // and close of ttyS0, with typed-ahead input waiting).
                    wakeInput = rx.count >= Self.fifoSize
                    rx.removeAll()
                }
            case 3: lcr = byte
            case 4: mcr = byte & 0x1F
            case 7: scr = byte
            default: break
            }
            updateLine()
        }
        if wakeInput { onRoomForInput?() }
    }

    /// IIR: highest-priority pending cause; reading it while THRE is the cause clears THRE.
    private func interruptIdentification(consume: Bool) -> UInt8 {
        let fifoBits: UInt8 = fifoEnabled ? 0xC0 : 0
        if ier & 0x01 != 0 && !rx.isEmpty { return fifoBits | 0x04 }
        if ier & 0x02 != 0 && threPending {
            if consume { threPending = false }
            return fifoBits | 0x02
        }
        return fifoBits | 0x01
    }

    /// MSR: in loopback the modem inputs mirror MCR outputs (DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD),
    /// which is how Linux's 8250 driver checks a UART is present; otherwise a connected line.
    private func modemStatus() -> UInt8 {
        guard loopback else { return 0xB0 } // DCD, DSR, CTS
        var v: UInt8 = 0
        if mcr & 0x01 != 0 { v |= 0x20 }
        if mcr & 0x02 != 0 { v |= 0x10 }
        if mcr & 0x04 != 0 { v |= 0x40 }
        if mcr & 0x08 != 0 { v |= 0x80 }
        return v
    }

    private func updateLine() {
        let pending = (ier & 0x01 != 0 && !rx.isEmpty) || (ier & 0x02 != 0 && threPending)
        if pending != lineHigh {
            lineHigh = pending
            setLine(pending)
        }
    }
}
