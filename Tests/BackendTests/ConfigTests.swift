import NetBackends
import Testing
import VMMCore
import VMMTestKit

/// `net=` and friends parse exactly as documented (Docs/backends.md), and bad input is
/// one typed error naming the option.
@Suite struct ConfigTests {
    func parse(_ text: String) throws -> (NetBackendConfig, DeviceOptions) {
        var options = try DeviceSpec.parse("e1000," + text).options
        let config = try NetBackendConfig.take(from: &options)
        return (config, options)
    }

    func error(_ text: String) -> String? {
        do { _ = try parse(text); return nil } catch { return "\(error)" }
    }

    @Test func backendKinds() throws {
        #expect(try parse("net=tap:tap0").0.kind == .tap(name: "tap0"))
        #expect(try parse("net=vde:///run/sw").0.kind == .vde(url: "vde:///run/sw"))
        #expect(try parse("net=vde:/run/sw").0.kind == .vde(url: "/run/sw"))
        #expect(try parse("net=vde:vxvde://239.0.0.1").0.kind == .vde(url: "vxvde://239.0.0.1"))
        #expect(try parse("net=vde:slirp://").0.kind == .vde(url: "slirp://"))
        #expect(try parse("net=stream:unix:/tmp/s").0.kind == .stream(StreamConfig(address: .unix(path: "/tmp/s"))))
        #expect(try parse("net=stream:tcp:127.0.0.1:5555,server=on").0.kind
            == .stream(StreamConfig(address: .tcp(host: "127.0.0.1", port: 5555), listen: true)))
        #expect(try parse("net=stream:tcp:[::1]:5555").0.kind == .stream(StreamConfig(address: .tcp(host: "::1", port: 5555))))
    }

    @Test func missingNetMeansUserNetworking() throws {
        let (config, rest) = try parse("mac=52:54:00:12:34:56")
        #expect(config.kind == .user(UserNetworkConfig()))
        #expect(rest.has("mac"))
    }

    @Test func userOptions() throws {
        let (config, rest) = try parse("net=user,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::5353-10.0.3.20:53,user-net=10.0.3.0/24,user-dns=10.0.3.53,ipv6=off,user-mtu=9000")
        guard case let .user(u) = config.kind else { Issue.record("not user"); return }
        #expect(u.network.description == "10.0.3.0" && u.prefixLength == 24)
        #expect(u.host.description == "10.0.3.2" && u.dns.description == "10.0.3.53" && u.dhcpStart.description == "10.0.3.15")
        #expect(u.ipv6 == false && u.mtu == 9000)
        #expect(u.forwards.count == 2)
        #expect(u.forwards[0].proto == .tcp && u.forwards[0].hostAddress.description == "127.0.0.1"
            && u.forwards[0].hostPort == 2222 && u.forwards[0].guestAddress == nil && u.forwards[0].guestPort == 22)
        #expect(u.forwards[1].proto == .udp && u.forwards[1].hostAddress == .any && u.forwards[1].guestAddress?.description == "10.0.3.20")
        #expect(rest.isEmpty)
    }

    @Test func userDefaults() {
        let u = UserNetworkConfig()
        #expect(u.network.description == "10.0.2.0" && u.host.description == "10.0.2.2")
        #expect(u.dns.description == "10.0.2.3" && u.dhcpStart.description == "10.0.2.15" && u.ipv6 && u.mtu == 1500)
    }

    @Test func filters() throws {
        let (config, rest) = try parse("net=tap:t0,capture=/tmp/x.pcap,fault-drop=12.5,fault-delay=3,fault-dup=1,fault-corrupt=2%,fault-rate=100,fault-seed=42,fault-dir=rx,mac=52:54:00:00:00:01")
        #expect(config.capturePath == "/tmp/x.pcap")
        let f = try #require(config.faults)
        #expect(f.dropPercent == 12.5 && f.delay == 3_000_000 && f.duplicatePercent == 1 && f.corruptPercent == 2)
        #expect(f.rateBitsPerSecond == 100_000_000 && f.seed == 42 && f.direction == .rx)
        #expect(rest.has("mac") && !rest.has("capture"))
    }

    @Test func errorsNameTheOption() {
        #expect(error("net=bogus") == "unknown network backend in 'net=bogus' (known: tap:NAME, tap-fd:N|NAME, vde:URL, user, stream:unix:PATH, stream:tcp:HOST:PORT, stream-fd:N|NAME)")
        #expect(error("net=tap:")?.contains("'net'") == true)
        #expect(error("net=tap:waytoolonginterfacename")?.contains("not a valid interface name") == true)
        // What the kernel's dev_valid_name refuses is refused here, with that reason, not
        // as "exists and is not a TAP interface" after TUNSETIFF's EINVAL.
        for bad in [".", "..", "a:b", "a\tb", "tap%d%d", "tap%s"] {
            #expect(error("net=tap:\(bad)")?.contains("not a valid interface name") == true, "\(bad)")
        }
        #expect(error("net=tap:tap%d") == nil)
        #expect(error("net=user,fault-rate=0.0000001")?.contains("'fault-rate'") == true)   // would round to "no limit"
        #expect(error("net=vde:")?.contains("'net'") == true)
        #expect(error("net=stream:tcp:localhost") == "bad value 'stream:tcp:localhost' for option 'net': expected stream:tcp:HOST:PORT")
        #expect(error("net=stream:tcp:h:0")?.contains("TCP port") == true)
        #expect(error("net=stream:udp:x")?.contains("stream:unix:PATH") == true)
        #expect(error("net=user,hostfwd=tcp:127.0.0.1:2222") == "bad value 'tcp:127.0.0.1:2222' for option 'hostfwd': expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT")
        #expect(error("net=user,hostfwd=sctp::1-:2")?.contains("protocol must be tcp or udp") == true)
        #expect(error("net=user,hostfwd=tcp:1.2.3:1-:2")?.contains("not an IPv4 address") == true)
        #expect(error("net=user,hostfwd=tcp::1-:0")?.contains("guest port") == true)
        #expect(error("net=user,user-net=10.0.2.0/31")?.contains("'user-net'") == true)
        // Networks too small for the defaults are refused, not handed to libslirp.
        #expect(error("net=user,user-net=10.0.2.0/28") == "bad value '10.0.2.0/28' for option 'user-net': the default dhcp-start 10.0.2.15 is not a host address in it; give dhcp-start= too")
        #expect(error("net=user,user-net=10.0.2.0/29")?.contains("the default dhcp-start 10.0.2.15") == true)
        #expect(error("net=user,user-net=10.0.2.0/30")?.contains("the default user-dns 10.0.2.3") == true)
        #expect(error("net=user,user-net=10.0.2.0/28,dhcp-start=10.0.2.8") == nil)
        #expect(error("net=user,dhcp-start=10.0.2.3") == "bad value '10.0.2.3' for option 'dhcp-start': the first DHCP lease 10.0.2.3 is the host's or the DNS server's address")
        // QEMU's net_slirp_init: "DNS must be different from host".
        #expect(error("net=user,user-dns=10.0.2.2") == "bad value '10.0.2.2' for option 'user-dns': the DNS server must not be the host's address")
        #expect(error("net=user,user-host=10.0.2.3") == "bad value '10.0.2.3' for option 'user-host': the DNS server must not be the host's address")
        #expect(error("net=user,user-host=192.168.1.1")?.contains("'user-host'") == true)
        #expect(error("net=user,user-mtu=70000")?.contains("'user-mtu'") == true)
        #expect(error("net=tap:t0,hostfwd=tcp::1-:2") == "option 'hostfwd' does not apply to net=tap")
        #expect(error("net=user,server=on") == "option 'server' does not apply to net=user")
        #expect(error("net=user,fault-drop=120")?.contains("'fault-drop'") == true)
        #expect(error("net=user,fault-dir=up")?.contains("'fault-dir'") == true)
        #expect(error("net=user,capture=")?.contains("'capture'") == true)
        #expect(error("net=user,net=tap:x") == "option 'net' given more than once")
    }

    @Test func openErrorsLeaveNothingBehind() throws {
        let running = try RunningLoop()
        let factory = NetBackendFactory()
        var options = try DeviceSpec.parse("e1000,net=stream:unix:/nonexistent/dir/sock").options
        #expect(throws: NetBackendError.self) { try factory.makeBackend(options: &options, eventLoop: running.loop, clock: running.loop) }
        do {
            var o = try DeviceSpec.parse("e1000,net=vde:/nonexistent/switch").options
            _ = try factory.makeBackend(options: &o, eventLoop: running.loop, clock: running.loop)
            Issue.record("opened a missing switch")
        } catch {
            #expect("\(error)".hasPrefix("option 'net=vde:/nonexistent/switch': vde_open failed"))
        }
        // A capture file that cannot be created: the backend under it is closed again.
        let dir = TemporaryDirectory()
        let sock = dir.path + "/s"
        var o = try DeviceSpec.parse("e1000,net=stream:unix:\(sock),server=on,capture=/nonexistent/x.pcap").options
        #expect(throws: NetBackendError.self) { try factory.makeBackend(options: &o, eventLoop: running.loop, clock: running.loop) }
        #expect(access(sock, F_OK) != 0, "the listening socket file was removed")
    }

    /// `tap-fd:N` names only a descriptor the process was started with, and each once: a
    /// number the VMM opened itself (here /dev/null standing in for KVM or a disk) was
    /// adopted, failed the TAP check and was closed under its owner.
    @Test func aDescriptorNumberMustBeInheritedAndIsTakenOnce() throws {
        let running = try RunningLoop()
        let factory = NetBackendFactory()
        PassedFileDescriptors.recordInherited()
        let own = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(own) }
        for kind in ["tap-fd", "stream-fd"] {
            var o = try DeviceSpec.parse("e1000,net=\(kind):\(own)").options
            do {
                _ = try factory.makeBackend(options: &o, eventLoop: running.loop, clock: running.loop)
                Issue.record("\(kind) adopted a descriptor the process opened itself")
            } catch {
                #expect("\(error)".contains("was not passed to swiftvmm when it started"))
            }
            #expect(fcntl(own, F_GETFD) >= 0, "still open")
        }
        #expect(error("net=tap-fd:99999999999")?.contains("is not a descriptor number") == true)
        #expect(error("net=tap-fd:2") == "bad value 'tap-fd:2' for option 'net': descriptors 0-2 are the standard streams")
    }
}

#if canImport(Glibc)
import Glibc
#endif

