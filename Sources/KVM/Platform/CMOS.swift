#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// The MC146818 RTC/CMOS behind ports 0x70 (index, bit 7 = NMI mask) and 0x71 (data):
/// the host's UTC time in BCD, update never in progress (register A bit 7 clear, so
/// readers do not spin), 24-hour mode; the rest is 128 bytes of NVRAM.
public final class CMOS: AccessHandler, @unchecked Sendable {
    public static let ports: Range<UInt64> = 0x70 ..< 0x72

    private let lock = DeviceLock()
    private var index: UInt8 = 0
    private var nvram = [UInt8](repeating: 0, count: 128)

    public init() {}

    /// A word access is the index then the data byte, as QEMU splits it (`outw` to 0x70
    /// selects and writes in one).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        lock.withLock {
            var value: UInt64 = 0
            for i in 0 ..< min(max(size, 1), 2) where offset &+ UInt64(i) < 2 {
                let byte = offset &+ UInt64(i) == 0 ? index : register(index & 0x7F)
                value |= UInt64(byte) << (8 * UInt64(i))
            }
            return value
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        lock.withLock {
            for i in 0 ..< min(max(size, 1), 2) where offset &+ UInt64(i) < 2 {
                let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
                if offset &+ UInt64(i) == 0 { index = byte } else if index & 0x7F >= 0x0E { nvram[Int(index & 0x7F)] = byte }
            }
        }
    }

    private func register(_ r: UInt8) -> UInt8 {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        func bcd(_ v: Int32) -> UInt8 { UInt8(truncatingIfNeeded: (v / 10) << 4 | (v % 10)) }
        switch r {
        case 0x00: return bcd(tm.tm_sec)
        case 0x02: return bcd(tm.tm_min)
        case 0x04: return bcd(tm.tm_hour)
        case 0x06: return bcd(tm.tm_wday + 1)
        case 0x07: return bcd(tm.tm_mday)
        case 0x08: return bcd(tm.tm_mon + 1)
        case 0x09: return bcd(tm.tm_year % 100)
        case 0x32: return bcd(19 + tm.tm_year / 100)
        case 0x0A: return 0x26 // 32.768 kHz time base, 1024 Hz rate, no update in progress
        case 0x0B: return 0x02 // 24-hour, BCD, no interrupts
        case 0x0C: return 0x00
        case 0x0D: return 0x80 // valid RAM and time
        default: return nvram[Int(r & 0x7F)]
        }
    }
}
