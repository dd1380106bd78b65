/// One `hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` rule (QEMU's syntax):
/// connections to HOSTADDR:HOSTPORT on the host reach GUESTADDR:GUESTPORT in the guest.
public struct HostForward: Equatable, Sendable {
    public enum Proto: String, Sendable { case tcp, udp }
    public var proto: Proto
    public var hostAddress: IPv4Address
    public var hostPort: UInt16
    /// nil: the first DHCP address (`dhcp-start`), as in QEMU.
    public var guestAddress: IPv4Address?
    public var guestPort: UInt16
    /// The rule as written, for messages.
    public var rule: String

    public init(parsing rule: String) throws(NetBackendError) {
        func bad(_ reason: String) -> NetBackendError { .badValue(option: "hostfwd", value: rule, reason: reason) }
        self.rule = rule
        let sides = rule.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard sides.count == 2 else { throw bad("expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT") }
        let host = sides[0].split(separator: ":", omittingEmptySubsequences: false)
        guard host.count == 3 else { throw bad("expected [tcp|udp]:[HOSTADDR]:HOSTPORT before '-'") }
        switch host[0] {
        case "", "tcp": proto = .tcp
        case "udp": proto = .udp
        default: throw bad("protocol must be tcp or udp")
        }
        if host[1].isEmpty {
            hostAddress = .any
        } else {
            guard let a = IPv4Address(host[1]) else { throw bad("'\(host[1])' is not an IPv4 address") }
            hostAddress = a
        }
        guard let hp = UInt16(host[2]) else { throw bad("host port must be 0...65535") }
        hostPort = hp
        let guest = sides[1].split(separator: ":", omittingEmptySubsequences: false)
        guard guest.count == 2 else { throw bad("expected [GUESTADDR]:GUESTPORT after '-'") }
        if guest[0].isEmpty {
            guestAddress = nil
        } else {
            guard let a = IPv4Address(guest[0]) else { throw bad("'\(guest[0])' is not an IPv4 address") }
            guestAddress = a
        }
        guard let gp = UInt16(guest[1]), gp > 0 else { throw bad("guest port must be 1...65535") }
        guestPort = gp
    }
}
