import VMMCore

/// The network options every NIC accepts (taken by `NetBackendFactory`), for `swiftvmm backends`.
public enum NetBackendHelp {
    public static let backends: [OptionHelp] = [
        OptionHelp("net", "user", "user-mode NAT through libslirp (default; no privileges): DHCP, DNS, hostfwd"),
        OptionHelp("net", "tap:NAME", "a TAP device: attaches to a persistent one or creates NAME and removes it on exit (CAP_NET_ADMIN unless the TAP is yours)"),
        OptionHelp("net", "tap-fd:N|NAME", "an open TAP (IFF_NO_PI|IFF_VNET_HDR) handed over: descriptor N inherited from the parent, or NAME passed with QMP getfd"),
        OptionHelp("net", "vde:URL", "a VDE switch through libvdeplug: vde:///run/sw, vde:/path/to/switch, vde:vxvde://239.1.2.3; under the sandbox only the vde, vxvde, vxlan, ptp, tap, seqpacket and null plugins"),
        OptionHelp("net", "stream:unix:PATH", "frames with 4-byte big-endian lengths over a unix socket (QEMU -netdev stream, passt); add server=on to listen"),
        OptionHelp("net", "stream:tcp:HOST:PORT", "the same over TCP"),
        OptionHelp("net", "stream-fd:N|NAME", "a connected stream socket handed over (inherited descriptor N, or NAME from QMP getfd); no reconnect"),
    ]

    public static let userOptions: [OptionHelp] = [
        OptionHelp("hostfwd", "tcp|udp:[HOSTADDR]:PORT-[GUESTADDR]:PORT", "forward a host port into the guest (repeatable)"),
        OptionHelp("user-net", "10.0.2.0/24", "the guest's IPv4 network"),
        OptionHelp("user-host", "10.0.2.2", "the gateway/host address"),
        OptionHelp("user-dns", "10.0.2.3", "the DNS forwarder's address"),
        OptionHelp("dhcp-start", "10.0.2.15", "first address DHCP hands out"),
        OptionHelp("ipv6", "on|off", "IPv6 (default on)"),
        OptionHelp("user-mtu", "576-65520", "the stack's MTU (default 1500; a NIC's own mtu= is what the guest is offered)"),
    ]

    public static let filters: [OptionHelp] = [
        OptionHelp("capture", "FILE.pcap", "write every frame, both directions, to a pcap file (tshark/Wireshark)"),
        OptionHelp("fault-drop", "PCT", "drop this percentage of frames"),
        OptionHelp("fault-dup", "PCT", "duplicate this percentage of frames"),
        OptionHelp("fault-corrupt", "PCT", "flip a byte in this percentage of frames"),
        OptionHelp("fault-reorder", "PCT", "hold this percentage of frames until the next one has gone (at most 5 ms)"),
        OptionHelp("fault-delay", "MS", "delay every frame"),
        OptionHelp("fault-rate", "MBPS", "rate-limit (token bucket)"),
        OptionHelp("fault-seed", "N", "seed, so a run is reproducible"),
        OptionHelp("fault-dir", "tx|rx|both", "which direction the faults apply to (default both)"),
    ]
}
