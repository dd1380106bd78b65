#if canImport(Glibc)
import Glibc
#endif

/// The MC146818's time registers as a calendar: how a moment is written into seconds,
/// minutes, hours (with the PM bit in 12-hour mode), day of week, day of month, month,
/// year and century, in BCD or binary (register B's DM and 24/12 bits), and read back.
/// The encodings are QEMU's (hw/rtc/mc146818rtc.c `rtc_set_cmos`, `rtc_get_time`,
/// `rtc_from_bcd`), which Linux's `mc146818_get_time`/`mc146818_set_time` read and write.
struct RTCCalendar {
    /// Register B: binary (DM) rather than BCD, and 24-hour rather than 12-hour mode.
    var binary: Bool
    var twentyFourHour: Bool

    /// The time registers (0x00 seconds … 0x09 year, 0x32 century) for `seconds` since the epoch (UTC).
    func registers(for seconds: Int64) -> [UInt8: UInt8] {
        var t = time_t(truncatingIfNeeded: seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        var hours = encode(tm.tm_hour)
        if !twentyFourHour {
            let h = tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12
            hours = encode(h) | (tm.tm_hour >= 12 ? 0x80 : 0)
        }
        return [RTCRegister.seconds: encode(tm.tm_sec), RTCRegister.minutes: encode(tm.tm_min), RTCRegister.hours: hours,
                RTCRegister.dayOfWeek: encode(tm.tm_wday + 1), RTCRegister.dayOfMonth: encode(tm.tm_mday),
                RTCRegister.month: encode(tm.tm_mon + 1), RTCRegister.year: encode((tm.tm_year + 1900) % 100),
                RTCRegister.century: encode((tm.tm_year + 1900) / 100)]
    }

    /// Seconds since the epoch that the time registers in `value(_:)` spell; nil when they
    /// spell no date (a month of 13, a BCD digit above 9).
    func seconds(from value: (UInt8) -> UInt8) -> Int64? {
        guard let sec = decode(value(RTCRegister.seconds)), let min = decode(value(RTCRegister.minutes)),
              let hourField = decode(value(RTCRegister.hours) & 0x7F), let mday = decode(value(RTCRegister.dayOfMonth)),
              let month = decode(value(RTCRegister.month)), let year = decode(value(RTCRegister.year)),
              let century = decode(value(RTCRegister.century)),
              sec < 60, min < 60, (1 ... 31).contains(mday), (1 ... 12).contains(month) else { return nil }
        let hour = twentyFourHour ? hourField : hourField % 12 + (value(RTCRegister.hours) & 0x80 != 0 ? 12 : 0)
        guard hour < 24 else { return nil }
        var tm = tm()
        tm.tm_sec = Int32(sec); tm.tm_min = Int32(min); tm.tm_hour = Int32(hour)
        tm.tm_mday = Int32(mday); tm.tm_mon = Int32(month - 1); tm.tm_year = Int32(century * 100 + year - 1900)
        return Int64(timegm(&tm))
    }

    /// Whether the alarm registers match the time registers: an alarm byte with its two
    /// top bits set matches anything (the "don't care" code, MC146818 datasheet; QEMU's
    /// `rtc_from_bcd` returns -1 for it).
    func alarmMatches(alarm: (second: UInt8, minute: UInt8, hour: UInt8), now: [UInt8: UInt8]) -> Bool {
        func matches(_ a: UInt8, _ current: UInt8?) -> Bool { a & 0xC0 == 0xC0 || a == current }
        return matches(alarm.second, now[RTCRegister.seconds]) && matches(alarm.minute, now[RTCRegister.minutes])
            && matches(alarm.hour, now[RTCRegister.hours])
    }

    private func encode(_ v: Int32) -> UInt8 {
        binary ? UInt8(truncatingIfNeeded: v) : UInt8(truncatingIfNeeded: (v / 10) << 4 | (v % 10))
    }

    private func decode(_ v: UInt8) -> Int? {
        if binary { return Int(v) }
        guard v & 0x0F <= 9, v >> 4 <= 9 else { return nil }
        return Int(v >> 4) * 10 + Int(v & 0x0F)
    }
}

/// The MC146818's register numbers (Linux include/linux/mc146818rtc.h).
enum RTCRegister {
    static let seconds: UInt8 = 0x00, secondsAlarm: UInt8 = 0x01, minutes: UInt8 = 0x02, minutesAlarm: UInt8 = 0x03
    static let hours: UInt8 = 0x04, hoursAlarm: UInt8 = 0x05, dayOfWeek: UInt8 = 0x06, dayOfMonth: UInt8 = 0x07
    static let month: UInt8 = 0x08, year: UInt8 = 0x09
    static let a: UInt8 = 0x0A, b: UInt8 = 0x0B, c: UInt8 = 0x0C, d: UInt8 = 0x0D
    /// Where PC firmware keeps the century (QEMU's RTC_CENTURY; the ACPI FADT's default).
    static let century: UInt8 = 0x32
    static let timeRegisters: Set<UInt8> = [seconds, minutes, hours, dayOfWeek, dayOfMonth, month, year, century]
}

/// Register bits (Linux include/linux/mc146818rtc.h).
enum RTCBits {
    /// Register A: update in progress; the divider select (DV2–DV0), the periodic rate
    /// select (low four bits).
    static let uip: UInt8 = 0x80, dividerMask: UInt8 = 0x70, rateMask: UInt8 = 0x0F
    /// The divider runs for DV values up to 010 (the 32.768 kHz time base), as QEMU's
    /// `rtc_running` reads it; 11x holds the divider chain in reset (Linux's
    /// `mc146818_set_time` writes RTC_DIV_RESET2 while it sets the time).
    static let dividerRunningMax: UInt8 = 0x20
    /// Register B: SET (updates stop, the time is being written), the interrupt enables,
    /// binary data mode, 24-hour mode.
    static let set: UInt8 = 0x80, pie: UInt8 = 0x40, aie: UInt8 = 0x20, uie: UInt8 = 0x10
    static let dm: UInt8 = 0x04, twentyFourHour: UInt8 = 0x02
    /// Register C: IRQF (any enabled flag), periodic, alarm and update-ended flags.
    static let irqf: UInt8 = 0x80, pf: UInt8 = 0x40, af: UInt8 = 0x20, uf: UInt8 = 0x10
    /// The flags that have an enable bit at the same position in register B.
    static let interruptFlags: UInt8 = 0x70
    /// Register D: valid RAM and time.
    static let vrt: UInt8 = 0x80
}
