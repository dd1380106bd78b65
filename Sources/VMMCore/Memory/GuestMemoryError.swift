/// Why a guest-physical range could not be used. Devices log these (rate-limited)
/// and ignore the access or enter their error state; they never trap on them.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Some part of `[address, address+length)` is not guest RAM (the PCI hole, past the end…).
    case notRAM(address: UInt64, length: UInt64)
    /// `address + length` would pass 2^64.
    case wraps(address: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case let .notRAM(a, l): "guest range 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) is not RAM"
        case let .wraps(a, l): "guest range 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) wraps past 2^64"
        }
    }
}
