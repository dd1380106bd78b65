#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// The MC146818 RTC/CMOS behind ports 0x70 (index, bit 7 = NMI mask) and 0x71 (data), as
/// Linux's rtc-cmos and `mc146818_get_time`/`mc146818_set_time` use it: the time starts at
/// the host's UTC and runs on the machine's clock; the guest may set it (register B's SET
/// bit, or register A's divider held in reset, freezes the registers; the clock starts
/// from what was written when both are let go, half a second into its first second after
/// a divider reset), choose BCD or binary and 12- or 24-hour mode, and take interrupts on
/// IRQ 8: update-ended once a second (UIE), the alarm (AIE, with "don't care" bytes) and
/// periodic (PIE, at register A's rate). Register C says which fired, whether enabled or
/// not (a guest may poll it), and lowers the line when read. "Update in progress" is never
/// reported, so readers never spin. The other bytes are NVRAM. Behaviour as QEMU's
/// hw/rtc/mc146818rtc.c where the datasheet leaves a choice.
public final class CMOS: AccessHandler, @unchecked Sendable {
    public static let ports: Range<UInt64> = 0x70 ..< 0x72
    /// ISA IRQ 8 (the MP table routes it to IOAPIC pin 8).
    public static let irq = 8

    private let lock = DeviceLock()
    private let clock: DeviceClock
    private let setLine: @Sendable (Bool) -> Void
    private var index: UInt8 = 0
    private var registers = [UInt8](repeating: 0, count: 128)
    /// The guest's time: `baseSeconds` at `clock.now == baseTime`.
    private var baseSeconds: Int64
    private var baseTime: UInt64
    private lazy var updateTimer = DeviceTimer(clock: clock, lock: lock) { [weak self] in self?.secondEnded() }
    private lazy var periodicTimer = DeviceTimer(clock: clock, lock: lock) { [weak self] in self?.periodElapsed() }

    /// - Parameters:
    ///   - clock: the machine's clock (timers and the running time).
    ///   - startSeconds: the time at power-on, seconds since the epoch (the host's UTC).
    ///   - setLine: raises or lowers IRQ 8.
    public init(clock: DeviceClock, startSeconds: Int64 = Int64(time(nil)), setLine: @escaping @Sendable (Bool) -> Void) {
        self.clock = clock
        self.setLine = setLine
        baseSeconds = startSeconds
        baseTime = clock.now
        registers[Int(RTCRegister.a)] = 0x26   // 32.768 kHz time base, 1024 Hz periodic rate
        registers[Int(RTCRegister.b)] = RTCBits.twentyFourHour
        registers[Int(RTCRegister.d)] = RTCBits.vrt
        lock.withLock { scheduleUpdate() }
    }

    /// Stops the timers (the machine is going away).
    public func shutdown() {
        updateTimer.cancel()
        periodicTimer.cancel()
    }

    /// A word access is the index then the data byte, as QEMU splits it (`outw` to 0x70
    /// selects and writes in one).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        lock.withLock {
            var value: UInt64 = 0
            for i in 0 ..< min(max(size, 1), 2) where offset &+ UInt64(i) < 2 {
                let byte = offset &+ UInt64(i) == 0 ? index : readRegister(index & 0x7F)
                value |= UInt64(byte) << (8 * UInt64(i))
            }
            return value
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        lock.withLock {
            for i in 0 ..< min(max(size, 1), 2) where offset &+ UInt64(i) < 2 {
                let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
                if offset &+ UInt64(i) == 0 { index = byte } else { writeRegister(index & 0x7F, byte) }
            }
        }
    }

    // MARK: Registers

    private var b: UInt8 { registers[Int(RTCRegister.b)] }
    private var isSetting: Bool { b & RTCBits.set != 0 }
    private var dividerRuns: Bool { registers[Int(RTCRegister.a)] & RTCBits.dividerMask <= RTCBits.dividerRunningMax }
    /// Whether the time registers follow the running clock (else they hold what was
    /// latched or written).
    private var isRunning: Bool { !isSetting && dividerRuns }
    private var calendar: RTCCalendar {
        RTCCalendar(binary: b & RTCBits.dm != 0, twentyFourHour: b & RTCBits.twentyFourHour != 0)
    }

    /// The guest's time now, in whole seconds, and how far into that second.
    private func now() -> (seconds: Int64, intoSecond: UInt64) {
        let elapsed = clock.now &- baseTime
        return (baseSeconds &+ Int64(elapsed / 1_000_000_000), elapsed % 1_000_000_000)
    }

    /// Writes the running time into the time registers (while SET is clear they are
    /// computed at each read, as QEMU's `rtc_update_time`).
    private func latchTime() {
        for (r, v) in calendar.registers(for: now().seconds) { registers[Int(r)] = v }
    }

    private func readRegister(_ r: UInt8) -> UInt8 {
        if RTCRegister.timeRegisters.contains(r), isRunning { latchTime() }
        switch r {
        case RTCRegister.c:
            // Reading C acknowledges: every flag clears and IRQ 8 drops (Linux's
            // cmos_interrupt reads it first thing); the update timer runs again to set them.
            let value = registers[Int(r)]
            registers[Int(r)] = 0
            setLine(false)
            scheduleUpdate()
            return value
        default:
            return registers[Int(r)]
        }
    }

    private func writeRegister(_ r: UInt8, _ value: UInt8) {
        switch r {
        case _ where RTCRegister.timeRegisters.contains(r):
            // A write while the clock runs sets the time from all the registers at once
            // (QEMU's rtc_set_time); under SET or a divider reset the registers wait.
            let running = isRunning
            if running { latchTime() }
            registers[Int(r)] = value
            if running { startClock() }
        case RTCRegister.secondsAlarm, RTCRegister.minutesAlarm, RTCRegister.hoursAlarm:
            registers[Int(r)] = value
        case RTCRegister.a:
            writeA(value)
        case RTCRegister.b:
            writeB(value)
        case RTCRegister.c, RTCRegister.d:
            break   // read-only
        default:
            registers[Int(r)] = value
        }
    }

    /// Register A: the divider and the periodic rate. UIP is read-only (and never set).
    private func writeA(_ value: UInt8) {
        let old = registers[Int(RTCRegister.a)]
        let wasRunning = isRunning
        let dividerWillRun = value & RTCBits.dividerMask <= RTCBits.dividerRunningMax
        // Divider held in reset: the time stops where it is (QEMU `rtc_update_time`).
        if wasRunning, !dividerWillRun { latchTime() }
        registers[Int(RTCRegister.a)] = value & ~RTCBits.uip
        // Let go with SET clear: the clock starts from the registers, and "the first
        // update cycle begins one-half second later" (datasheet; QEMU sets its offset to
        // 500 ms).
        if !wasRunning, isRunning { startClock(intoSecond: 500_000_000) }
        scheduleUpdate()
        // A new rate applies from now (QEMU `periodic_timer_update` on a rate change),
        // not after the old period, which could be half a second.
        schedulePeriodic(restart: (old ^ value) & RTCBits.rateMask != 0)
    }

    private func writeB(_ value: UInt8) {
        var value = value
        if value & RTCBits.set != 0 {
            // SET: updates stop with the registers holding the time of now; the
            // update-ended interrupt is off while they do (QEMU clears UIE).
            if isRunning { latchTime() }
            value &= ~RTCBits.uie
        } else if isSetting, dividerRuns {
            // SET cleared: the clock starts from what the guest wrote (in the mode it
            // wrote it in, which is the old B's, as QEMU reads them before storing B).
            // With the divider still in reset it starts when register A lets it go.
            startClock()
        }
        let c = registers[Int(RTCRegister.c)]
        // An enable for a flag already set raises the interrupt at once.
        if value & c & RTCBits.interruptFlags != 0 {
            registers[Int(RTCRegister.c)] = c | RTCBits.irqf
            setLine(true)
        } else {
            registers[Int(RTCRegister.c)] = c & ~RTCBits.irqf
            setLine(false)
        }
        registers[Int(RTCRegister.b)] = value
        scheduleUpdate()
        schedulePeriodic()
    }

    /// The time registers become the running time from now on. Registers that spell no
    /// date leave the clock as it was (a real part would run on from garbage; Linux
    /// validates before it writes).
    private func startClock(intoSecond: UInt64 = 0) {
        guard let seconds = calendar.seconds(from: { registers[Int($0)] }) else { return }
        baseSeconds = seconds
        baseTime = clock.now &- intoSecond
        scheduleUpdate()
    }

    // MARK: Interrupts

    /// Raises IRQ 8 for the flags in `flags` that are newly set and enabled in B.
    private func post(_ flags: UInt8) {
        let c = registers[Int(RTCRegister.c)]
        let new = flags & ~c
        registers[Int(RTCRegister.c)] = c | flags
        if new & b & RTCBits.interruptFlags != 0 {
            registers[Int(RTCRegister.c)] |= RTCBits.irqf
            setLine(true)
        }
    }

    /// While the clock runs: a timer at the end of each second, which sets UF (and AF when
    /// the alarm matches) whether or not their interrupts are enabled, so a guest polling
    /// register C sees them. With UIE and AIE off it stops once both flags are set, until
    /// C is read, as QEMU's `check_update_timer` does: one callback a second at most.
    private func scheduleUpdate() {
        let bothSet = RTCBits.uf | RTCBits.af
        guard isRunning,
              b & (RTCBits.uie | RTCBits.aie) != 0 || registers[Int(RTCRegister.c)] & bothSet != bothSet else {
            updateTimer.cancel()
            return
        }
        updateTimer.arm(after: 1_000_000_000 - now().intoSecond)
    }

    private func secondEnded() {
        guard isRunning else { return }
        var flags = RTCBits.uf
        let time = calendar.registers(for: now().seconds)
        let alarm = (registers[Int(RTCRegister.secondsAlarm)], registers[Int(RTCRegister.minutesAlarm)],
                     registers[Int(RTCRegister.hoursAlarm)])
        if calendar.alarmMatches(alarm: alarm, now: time) { flags |= RTCBits.af }
        post(flags)
        scheduleUpdate()
    }

    /// The periodic interrupt's period, from register A's rate select: 2^(rate-1) / 32768 s,
    /// rates 1 and 2 counting as 8 and 9 (datasheet table 3; QEMU's
    /// `periodic_period_to_clock`); none for rate 0 or with PIE off.
    private var periodicNanoseconds: UInt64? {
        var rate = Int(registers[Int(RTCRegister.a)] & RTCBits.rateMask)
        guard rate != 0, b & RTCBits.pie != 0 else { return nil }
        if rate <= 2 { rate += 7 }
        return (UInt64(1) << UInt64(rate - 1)) * 1_000_000_000 / 32768
    }

    /// Held dividers stop the periodic interrupt too ("holding the dividers in reset
    /// prevents interrupts from operating"; SET does not).
    private func schedulePeriodic(restart: Bool = false) {
        guard dividerRuns, let period = periodicNanoseconds else {
            periodicTimer.cancel()
            return
        }
        if restart || !periodicTimer.isArmed { periodicTimer.arm(after: period) }
    }

    private func periodElapsed() {
        post(RTCBits.pf)
        if let period = periodicNanoseconds { periodicTimer.arm(after: period) }
    }
}
