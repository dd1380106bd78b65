import KVM
import Synchronization
import Testing
import VMMCore

/// Register-level tests of the platform devices (no KVM): 16550A, i8042, CMOS, boot marker.
struct Serial16550Tests {
    final class Wires: @unchecked Sendable {
        let out = Mutex<[UInt8]>([])
        let line = Mutex<[Bool]>([])
    }

    private func make() -> (Serial16550, Wires) {
        let w = Wires()
        let uart = Serial16550(output: { b in w.out.withLock { $0.append(b) } },
                               setLine: { l in w.line.withLock { $0.append(l) } })
        return (uart, w)
    }

    @Test func transmitsAndAlwaysReportsTHREmpty() {
        let (uart, w) = make()
        for b in Array("hi".utf8) { uart.write(offset: 0, size: 1, value: UInt64(b)) }
        #expect(w.out.withLock { $0 } == Array("hi".utf8))
        #expect(uart.read(offset: 5, size: 1) & 0x60 == 0x60) // LSR: THRE | TEMT
    }

    @Test func threInterruptRaisedOnEnableAndClearedByReadingIIR() {
        let (uart, w) = make()
        uart.write(offset: 1, size: 1, value: 0x02) // IER: THRE
        #expect(w.line.withLock { $0 } == [true])
        #expect(uart.read(offset: 2, size: 1) == 0x02) // IIR: THRE pending
        #expect(w.line.withLock { $0 } == [true, false])
        #expect(uart.read(offset: 2, size: 1) == 0x01) // nothing pending
        uart.write(offset: 0, size: 1, value: 0x41) // THR write: empty again → pending
        #expect(w.line.withLock { $0.last } == true)
    }

    @Test func receiveFIFOHolds16BytesAndRaisesRXInterrupt() {
        let (uart, w) = make()
        uart.write(offset: 1, size: 1, value: 0x01) // IER: RX data
        #expect(uart.receive(Array(repeating: UInt8(0x61), count: 20)) == 16)
        #expect(uart.inputRoom == 0)
        #expect(w.line.withLock { $0 } == [true])
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x04) // IIR: RX data available
        for _ in 0 ..< 16 { #expect(uart.read(offset: 0, size: 1) == 0x61) }
        #expect(uart.read(offset: 5, size: 1) & 0x01 == 0) // LSR.DR clear
        #expect(w.line.withLock { $0.last } == false)
    }

    /// A full FIFO stops the host's input until there is room; Linux clears the FIFO with
    /// FCR at every open and close of ttyS0 (serial8250_clear_fifos), which made room
    /// without saying so: stdin was never read again, Ctrl-A x included.
    @Test func clearingAFullFIFOLetsInputIn() {
        let (uart, _) = make()
        let woken = Mutex(0)
        uart.onRoomForInput = { woken.withLock { $0 += 1 } }
        #expect(uart.receive(Array(repeating: UInt8(0x61), count: 16)) == 16)
        uart.write(offset: 2, size: 1, value: 0x07)   // FCR: enable, clear both FIFOs
        #expect(uart.inputRoom == 16)
        #expect(woken.withLock { $0 } == 1)
        uart.write(offset: 2, size: 1, value: 0x07)   // not full before: nobody was waiting
        #expect(woken.withLock { $0 } == 1)
    }

    @Test func loopbackMirrorsModemLinesAndData() {
        let (uart, w) = make()
        uart.write(offset: 4, size: 1, value: 0x1A) // MCR: loopback, RTS, OUT2
        #expect(uart.read(offset: 6, size: 1) & 0xF0 == 0x90) // CTS and DCD: what Linux's 8250 probe expects
        uart.write(offset: 0, size: 1, value: 0x55)
        #expect(w.out.withLock { $0 }.isEmpty)
        #expect(uart.read(offset: 0, size: 1) == 0x55)
    }

    @Test func divisorLatchDoesNotTransmit() {
        let (uart, w) = make()
        uart.write(offset: 3, size: 1, value: 0x80) // DLAB
        uart.write(offset: 0, size: 1, value: 0x01)
        uart.write(offset: 1, size: 1, value: 0x00)
        #expect(uart.read(offset: 0, size: 1) == 0x01)
        uart.write(offset: 3, size: 1, value: 0x03)
        #expect(w.out.withLock { $0 }.isEmpty)
        #expect(uart.read(offset: 7, size: 1) == 0) // scratch
        #expect(uart.read(offset: 9, size: 1) == 0xFF) // outside the 8 registers
    }

    /// A word access is two byte accesses, as QEMU splits it: `outw` of the divisor with
    /// DLAB set writes DLL and DLM; it wrote DLL only.
    @Test func wordAccessesReachBothRegisters() {
        let (uart, w) = make()
        uart.write(offset: 3, size: 1, value: 0x80) // DLAB
        uart.write(offset: 0, size: 2, value: 0x0180)
        #expect(uart.read(offset: 0, size: 1) == 0x80)
        #expect(uart.read(offset: 1, size: 1) == 0x01)
        #expect(uart.read(offset: 0, size: 2) == 0x0180)
        #expect(w.out.withLock { $0 }.isEmpty)
    }
}

struct I8042Tests {
    final class Resets: @unchecked Sendable { let count = Atomic<Int>(0) }

    private func make() -> (data: any AccessHandler, command: any AccessHandler, resets: Resets) {
        let r = Resets()
        let c = I8042(onReset: { r.count.add(1, ordering: .relaxed) })
        return (c.handler(for: I8042.dataPort), c.handler(for: I8042.commandPort), r)
    }

    @Test func pulseResetCommandResets() {
        let (_, command, resets) = make()
        command.write(offset: 0, size: 1, value: 0xFE)
        #expect(resets.count.load(ordering: .relaxed) == 1)
        command.write(offset: 0, size: 1, value: 0xFF) // pulse with bit 0 set: no reset line
        #expect(resets.count.load(ordering: .relaxed) == 1)
    }

    @Test func outputPortWriteWithResetBitClearResets() {
        let (data, command, resets) = make()
        command.write(offset: 0, size: 1, value: 0xD1)
        data.write(offset: 0, size: 1, value: 0x01) // bit 0 set: running
        #expect(resets.count.load(ordering: .relaxed) == 0)
        command.write(offset: 0, size: 1, value: 0xD1)
        data.write(offset: 0, size: 1, value: 0x00)
        #expect(resets.count.load(ordering: .relaxed) == 1)
    }

    @Test func selfTestAndConfigurationByte() {
        let (data, command, _) = make()
        command.write(offset: 0, size: 1, value: 0xAA)
        #expect(command.read(offset: 0, size: 1) & 0x01 == 0x01) // OBF
        #expect(data.read(offset: 0, size: 1) == 0x55)
        #expect(command.read(offset: 0, size: 1) & 0x01 == 0)
        command.write(offset: 0, size: 1, value: 0x60)
        data.write(offset: 0, size: 1, value: 0x47)
        command.write(offset: 0, size: 1, value: 0x20)
        #expect(data.read(offset: 0, size: 1) == 0x47)
    }
}

struct CMOSTests {
    @Test func timeIsBCDAndNeverUpdating() {
        let cmos = CMOS()
        cmos.write(offset: 0, size: 1, value: 0x0A)
        #expect(cmos.read(offset: 1, size: 1) & 0x80 == 0) // UIP clear
        for register: UInt64 in [0x00, 0x02, 0x04, 0x07, 0x08, 0x09] {
            cmos.write(offset: 0, size: 1, value: register | 0x80) // NMI-disable bit is ignored
            let v = cmos.read(offset: 1, size: 1)
            #expect(v & 0x0F <= 9 && v >> 4 <= 9, "register \(register) = \(v) is not BCD")
        }
    }

    /// `outw` to 0x70 selects the register and writes its data in one, as QEMU splits it.
    @Test func aWordWriteSelectsAndWrites() {
        let cmos = CMOS()
        cmos.write(offset: 0, size: 2, value: 0x5540)
        cmos.write(offset: 0, size: 1, value: 0x40)
        #expect(cmos.read(offset: 1, size: 1) == 0x55)
        #expect(cmos.read(offset: 0, size: 2) == 0x5540)
    }

    @Test func nvramKeepsWritesButNotTimeRegisters() {
        let cmos = CMOS()
        cmos.write(offset: 0, size: 1, value: 0x40)
        cmos.write(offset: 1, size: 1, value: 0x99)
        #expect(cmos.read(offset: 1, size: 1) == 0x99)
        cmos.write(offset: 0, size: 1, value: 0x0D)
        cmos.write(offset: 1, size: 1, value: 0x00)
        #expect(cmos.read(offset: 1, size: 1) == 0x80)
    }
}
