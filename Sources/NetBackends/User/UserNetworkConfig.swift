import VMMCore

/// `net=user` and its options: the guest's view of the NAT network libslirp provides.
public struct UserNetworkConfig: Equatable, Sendable {
    public var network = IPv4Address(0x0A00_0200)        // 10.0.2.0
    public var prefixLength = 24
    public var host = IPv4Address(0x0A00_0202)           // 10.0.2.2: the gateway, and the host's loopback
    public var dns = IPv4Address(0x0A00_0203)            // 10.0.2.3
    public var dhcpStart = IPv4Address(0x0A00_020F)      // 10.0.2.15
    public var ipv6 = true
    public var mtu = 1500
    public var forwards: [HostForward] = []

    public static let maxMTU = 65_520
    public static let optionNames = ["hostfwd", "user-net", "user-host", "user-dns", "dhcp-start", "ipv6", "user-mtu"]

    public init() {}

    public var netmask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength) }

    static func take(from options: inout DeviceOptions) throws -> UserNetworkConfig {
        var c = UserNetworkConfig()
        if let v = try options.take("user-net") {
            let parts = v.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, let addr = IPv4Address(parts[0]) else {
                throw NetBackendError.badValue(option: "user-net", value: v, reason: "expected an IPv4 network like 10.0.2.0/24")
            }
            let prefix = parts.count == 2 ? Int(parts[1]) : 24
            guard let prefix, (8 ... 30).contains(prefix) else {
                throw NetBackendError.badValue(option: "user-net", value: v, reason: "prefix length must be 8...30")
            }
            c.prefixLength = prefix
            c.network = IPv4Address(addr.value & c.netmask)
            // QEMU's defaults relative to the network: .2 host, .3 DNS, .15 first DHCP lease.
            c.host = IPv4Address(c.network.value | 2)
            c.dns = IPv4Address(c.network.value | 3)
            c.dhcpStart = IPv4Address(c.network.value | 15)
        }
        var given: Set<String> = []
        for (key, keyPath) in [("user-host", \UserNetworkConfig.host), ("user-dns", \.dns), ("dhcp-start", \.dhcpStart)] {
            guard let v = try options.take(key) else { continue }
            guard let a = IPv4Address(v) else { throw NetBackendError.badValue(option: key, value: v, reason: "expected an IPv4 address") }
            guard c.isHostAddress(a) else {
                throw NetBackendError.badValue(option: key, value: v, reason: "not a host address in \(c.network)/\(c.prefixLength)")
            }
            c[keyPath: keyPath] = a
            given.insert(key)
        }
        // The defaults too (QEMU's net_slirp_init checks them the same way): in a /28 the
        // first lease .15 is the broadcast address, in a /29 outside the network, and in a
        // /30 the DNS .3 is the broadcast address.
        let network = "\(c.network)/\(c.prefixLength)"
        for (key, a) in [("user-host", c.host), ("user-dns", c.dns), ("dhcp-start", c.dhcpStart)] where !c.isHostAddress(a) {
            throw NetBackendError.badValue(option: "user-net", value: network,
                                           reason: "the default \(key) \(a) is not a host address in it; give \(key)= too")
        }
        // libslirp tries the DNS address first when it translates a connection
        // (`sotranslate_out4`), so a host alias equal to it would refuse every connection
        // to the host on a port other than 53; QEMU refuses it ("DNS must be different
        // from host", net/slirp.c).
        if c.dns == c.host {
            let key = given.contains("user-dns") ? "user-dns" : "user-host"
            throw NetBackendError.badValue(option: key, value: "\(c.dns)", reason: "the DNS server must not be the host's address")
        }
        if c.dhcpStart == c.host || c.dhcpStart == c.dns {
            let key = given.contains("dhcp-start") ? "dhcp-start" : "user-net"
            throw NetBackendError.badValue(option: key, value: given.contains("dhcp-start") ? "\(c.dhcpStart)" : network,
                                           reason: "the first DHCP lease \(c.dhcpStart) is the host's or the DNS server's address")
        }
        if let v = try options.takeBool("ipv6") { c.ipv6 = v }
        if let v = try options.takeInteger("user-mtu", in: 576 ... UserNetworkConfig.maxMTU) { c.mtu = v }
        c.forwards = try options.takeAll("hostfwd").map { r throws(NetBackendError) in try HostForward(parsing: r) }
        return c
    }

    func isHostAddress(_ a: IPv4Address) -> Bool {
        let hostBits = a.value & ~netmask
        return a.value & netmask == network.value && hostBits != 0 && hostBits != ~netmask
    }
}
