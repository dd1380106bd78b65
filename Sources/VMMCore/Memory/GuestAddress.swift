/// A guest-physical address. It deliberately has no `+`: every step a device
/// takes from a guest-controlled base goes through `checkedAdd`, so a value
/// that would wrap past 2^64 becomes `nil` instead of a trap or a wrapped pointer.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    @inlinable public init(_ raw: UInt64) { self.raw = raw }

    /// `self + offset`, or nil when it would pass 2^64.
    @inlinable public func checkedAdd(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// `self + index * stride` for ring arithmetic, or nil on any overflow.
    @inlinable public func checkedAdd(index: UInt64, stride: UInt64) -> GuestAddress? {
        let (product, overflow) = index.multipliedReportingOverflow(by: stride)
        return overflow ? nil : checkedAdd(product)
    }

    /// Distance from `base` to `self`, or nil when `self` lies below `base`.
    @inlinable public func offset(from base: GuestAddress) -> UInt64? {
        raw >= base.raw ? raw - base.raw : nil
    }

    @inlinable public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.raw < b.raw }

    public var description: String { "0x" + String(raw, radix: 16) }
}

/// A buffer in guest memory as a guest driver describes it (a descriptor's address and length).
public struct GuestBuffer: Hashable, Sendable {
    public var address: GuestAddress
    public var length: UInt32
    @inlinable public init(address: GuestAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
}
