#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 address as a host-order integer, parsed and printed in dotted-quad form.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init?(_ text: some StringProtocol) {
        var addr = in_addr()
        guard inet_pton(AF_INET, String(text), &addr) == 1 else { return nil }
        value = UInt32(bigEndian: addr.s_addr)
    }

    public static let any = IPv4Address(0)

    public var inAddr: in_addr { in_addr(s_addr: value.bigEndian) }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}
