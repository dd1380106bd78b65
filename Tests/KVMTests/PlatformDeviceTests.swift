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

/// The MC146818 as Linux's rtc-cmos drives it (drivers/rtc/rtc-cmos.c, rtc-mc146818-lib.c),
/// on a virtual clock.
final class RTCHarness: @unchecked Sendable {
    final class Line: Sendable {
        let levels = Mutex<[Bool]>([])
    }
    let clock = VirtualClock()
    let line = Line()
    let cmos: CMOS

    /// 2026-12-05 23:59:58 UTC unless told otherwise.
    init(start: Int64 = 1_796_515_198) {
        let line = self.line
        cmos = CMOS(clock: clock, startSeconds: start, setLine: { l in line.levels.withLock { $0.append(l) } })
    }

    func read(_ r: UInt8) -> UInt8 {
        cmos.write(offset: 0, size: 1, value: UInt64(r))
        return UInt8(truncatingIfNeeded: cmos.read(offset: 1, size: 1))
    }

    func write(_ r: UInt8, _ v: UInt8) {
        cmos.write(offset: 0, size: 1, value: UInt64(r))
        cmos.write(offset: 1, size: 1, value: UInt64(v))
    }

    /// seconds, minutes, hours, day of month, month, year, century as read.
    var time: [UInt8] { [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(read) }
    var isHigh: Bool { line.levels.withLock { $0.last ?? false } }
    func advance(milliseconds: UInt64) { clock.advance(by: milliseconds * 1_000_000) }
}

struct CMOSTests {
    @Test func timeIsBCDAndNeverUpdating() {
        let rtc = RTCHarness()
        #expect(rtc.read(0x0A) & 0x80 == 0) // UIP clear
        for register: UInt8 in [0x00, 0x02, 0x04, 0x07, 0x08, 0x09] {
            let v = rtc.read(register | 0x80) // NMI-disable bit is ignored
            #expect(v & 0x0F <= 9 && v >> 4 <= 9, "register \(register) = \(v) is not BCD")
        }
    }

    /// `outw` to 0x70 selects the register and writes its data in one, as QEMU splits it.
    @Test func aWordWriteSelectsAndWrites() {
        let cmos = RTCHarness().cmos
        cmos.write(offset: 0, size: 2, value: 0x5540)
        cmos.write(offset: 0, size: 1, value: 0x40)
        #expect(cmos.read(offset: 1, size: 1) == 0x55)
        #expect(cmos.read(offset: 0, size: 2) == 0x5540)
    }

    @Test func nvramKeepsWritesAndDIsReadOnly() {
        let rtc = RTCHarness()
        rtc.write(0x40, 0x99)
        #expect(rtc.read(0x40) == 0x99)
        rtc.write(0x0D, 0x00)
        #expect(rtc.read(0x0D) == 0x80)
    }

    /// The time starts at the host's and runs on the machine's clock, across midnight and
    /// the month and year ends alike.
    @Test func theClockRuns() {
        let rtc = RTCHarness()
        #expect(rtc.time == [0x58, 0x59, 0x23, 0x05, 0x12, 0x26, 0x20])
        rtc.advance(milliseconds: 2_000)
        #expect(rtc.time == [0x00, 0x00, 0x00, 0x06, 0x12, 0x26, 0x20])
        let newYear = RTCHarness(start: 1_798_761_599)   // 2026-12-31 23:59:59
        newYear.advance(milliseconds: 1_000)
        #expect(newYear.time == [0x00, 0x00, 0x00, 0x01, 0x01, 0x27, 0x20])
    }

    /// Linux's mc146818_set_time (hwclock --systohc): SET and the divider reset, the
    /// registers, then B and A restored. The clock runs on from what was written; before,
    /// the writes were dropped and the host's time came back.
    @Test func theGuestSetsTheTime() {
        let rtc = RTCHarness()
        let b = rtc.read(0x0B), a = rtc.read(0x0A)
        rtc.write(0x0B, b | 0x80)
        rtc.write(0x0A, a | 0x70)
        for (r, v): (UInt8, UInt8) in [(0x00, 0x05), (0x02, 0x04), (0x04, 0x03), (0x07, 0x02), (0x08, 0x01), (0x09, 0x27), (0x32, 0x20)] {
            rtc.write(r, v)
        }
        rtc.advance(milliseconds: 5_000)
        #expect(rtc.time == [0x05, 0x04, 0x03, 0x02, 0x01, 0x27, 0x20], "frozen while SET")
        rtc.write(0x0B, b)
        rtc.write(0x0A, a)
        rtc.advance(milliseconds: 3_000)
        #expect(rtc.time == [0x08, 0x04, 0x03, 0x02, 0x01, 0x27, 0x20])
        // A date that is no date (month 0x13) leaves the clock as it was.
        rtc.write(0x0B, b | 0x80)
        rtc.write(0x08, 0x13)
        rtc.write(0x0B, b)
        #expect(rtc.read(0x00) == 0x08 && rtc.read(0x08) == 0x01)
    }

    /// Binary data mode and 12-hour mode (PM in bit 7 of the hours).
    @Test func binaryAnd12HourModes() {
        let rtc = RTCHarness()
        rtc.write(0x0B, 0x04)   // DM, 12-hour
        #expect(rtc.time == [58, 59, 0x80 | 11, 5, 12, 26, 20])
        rtc.advance(milliseconds: 2_000)
        #expect(rtc.read(0x04) == 12)   // 12 AM
    }

    /// UIE: IRQ 8 at the end of each second; reading C gives IRQF|UF and lowers the line
    /// (Linux's cmos_interrupt). The alarm with "don't care" hours and minutes (0xC0) fires
    /// at its second, AF; the periodic interrupt at register A's rate, PF.
    @Test func updateAlarmAndPeriodicInterrupts() {
        let rtc = RTCHarness()
        rtc.write(0x0B, 0x02 | 0x10)
        #expect(!rtc.isHigh)
        rtc.advance(milliseconds: 1_000)
        #expect(rtc.isHigh)
        #expect(rtc.read(0x0C) == 0x90)
        #expect(!rtc.isHigh)
        #expect(rtc.read(0x0C) == 0x00)

        rtc.write(0x0B, 0x02)
        rtc.write(0x01, 0x02); rtc.write(0x03, 0xC0); rtc.write(0x05, 0xC0)   // at hh:mm:02
        rtc.write(0x0B, 0x02 | 0x20)
        _ = rtc.read(0x0C)
        rtc.advance(milliseconds: 1_000)   // :00
        #expect(!rtc.isHigh)
        rtc.advance(milliseconds: 2_000)   // :02
        #expect(rtc.isHigh)
        #expect(rtc.read(0x0C) & 0xA0 == 0xA0)

        rtc.write(0x0B, 0x02 | 0x40)       // PIE at the 1024 Hz rate of A = 0x26
        _ = rtc.read(0x0C)
        rtc.clock.advance(by: 976_563)
        #expect(rtc.isHigh)
        #expect(rtc.read(0x0C) & 0xC0 == 0xC0)
        rtc.write(0x0B, 0x02)
        rtc.advance(milliseconds: 10)
        #expect(!rtc.isHigh)
    }

    /// Register A's divider held in reset (DV = 11x) stops the time without SET; let go,
    /// the clock runs from the registers with its first second half over (datasheet:
    /// "the first update cycle begins one-half second later"; QEMU's 500 ms offset).
    @Test func aDividerResetStopsTheClockAndReleasingItStartsHalfASecondIn() {
        let rtc = RTCHarness()
        rtc.write(0x0A, 0x76)
        rtc.advance(milliseconds: 5_000)
        #expect(rtc.read(0x00) == 0x58, "frozen while the divider is in reset")
        rtc.write(0x0A, 0x26)
        rtc.advance(milliseconds: 400)
        #expect(rtc.read(0x00) == 0x58)
        rtc.advance(milliseconds: 200)
        #expect(rtc.read(0x00) == 0x59)
    }

    /// UF (and AF) are set at each second whatever the enables, so a guest that polls
    /// register C sees them, with IRQF clear and the line low (QEMU's check_update_timer).
    @Test func registerCShowsTheUpdateFlagToAPollingGuest() {
        let rtc = RTCHarness()
        _ = rtc.read(0x0C)
        rtc.advance(milliseconds: 1_000)
        #expect(rtc.read(0x0C) == 0x10)
        #expect(!rtc.isHigh)
        rtc.advance(milliseconds: 1_000)   // 00:00:00, the alarm registers' power-on value
        #expect(rtc.read(0x0C) == 0x30)
        #expect(!rtc.isHigh)
    }

    /// A new periodic rate applies from the write, not after the old period (500 ms at
    /// rate 15).
    @Test func aNewPeriodicRateAppliesAtOnce() {
        let rtc = RTCHarness()
        rtc.write(0x0A, 0x2F)
        rtc.write(0x0B, 0x02 | 0x40)
        rtc.advance(milliseconds: 100)
        _ = rtc.read(0x0C)
        rtc.write(0x0A, 0x26)              // 1024 Hz
        rtc.advance(milliseconds: 1)
        #expect(rtc.isHigh)
        #expect(rtc.read(0x0C) & 0xC0 == 0xC0)
    }

    /// An enable for a flag that is already set raises the line at once (QEMU does, and
    /// a driver that enables late must not miss it).
    @Test func enablingASetFlagRaisesAtOnce() {
        let rtc = RTCHarness()
        rtc.write(0x0B, 0x02 | 0x20)       // AIE alone: UF is still set each second
        rtc.advance(milliseconds: 1_000)
        rtc.write(0x0B, 0x02 | 0x30)
        #expect(rtc.isHigh)
    }
}
