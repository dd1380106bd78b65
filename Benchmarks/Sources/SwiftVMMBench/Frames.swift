import VMMNet

/// The frames the benchmarks push: IPv4/UDP datagrams of a given Ethernet frame length,
/// and one 64 KiB TCP send for TSO. Addresses come from the command line so that over a
/// TAP the namespace's kernel accepts them (its MAC and IP) and consumes them.
struct FrameAddressing {
    var deviceMAC: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    var peerMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF]
    var deviceIP: UInt32 = 0x0A4D_0002   // 10.77.0.2
    var peerIP: UInt32 = 0x0A4D_0001     // 10.77.0.1
    /// UDP discard: nothing listens in the namespace, the kernel drops the datagram.
    var port: UInt16 = 9
}

enum Frames {
    static let ethernetHeader = 14, ipv4Header = 20, udpHeader = 8, tcpHeader = 20
    static let tcpMSS = 1448
    /// A 64 KiB TCP send as Linux hands it to a NIC with TSO: headers + payload in one
    /// frame no larger than a backend's 65,535-byte limit.
    static let tsoFrameLength = 65_534

    /// A UDP frame of exactly `length` bytes (Ethernet header onward, no FCS) from
    /// `source` to `destination` (MACs, IPs), IP checksum filled, UDP checksum 0 (allowed on IPv4).
    static func udp(length: Int, from source: [UInt8], _ sourceIP: UInt32, to destination: [UInt8], _ destinationIP: UInt32, port: UInt16) -> [UInt8] {
        let minimum = ethernetHeader + ipv4Header + udpHeader
        let total = max(length, minimum)
        var f = [UInt8](repeating: 0, count: total)
        writeEthernet(&f, source: source, destination: destination)
        writeIPv4(&f, protocol: 17, totalLength: total - ethernetHeader, source: sourceIP, destination: destinationIP)
        let udp = ethernetHeader + ipv4Header
        put16(&f, udp, 40_000); put16(&f, udp + 2, port); put16(&f, udp + 4, UInt16(total - udp))
        for i in (udp + udpHeader) ..< total { f[i] = UInt8(truncatingIfNeeded: i) }
        return f
    }

    /// A TCP segment of `length` bytes whose TCP checksum field holds the pseudo-header
    /// sum, as a driver leaves it for checksum offload / TSO (NEEDS_CSUM, §5.1.6.2).
    static func tcp(length: Int, from source: [UInt8], _ sourceIP: UInt32, to destination: [UInt8], _ destinationIP: UInt32, port: UInt16) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: length)
        writeEthernet(&f, source: source, destination: destination)
        writeIPv4(&f, protocol: 6, totalLength: length - ethernetHeader, source: sourceIP, destination: destinationIP)
        let tcp = ethernetHeader + ipv4Header
        put16(&f, tcp, 40_000); put16(&f, tcp + 2, port)
        put32(&f, tcp + 4, 1000); put32(&f, tcp + 8, 1)
        f[tcp + 12] = 5 << 4; f[tcp + 13] = 0x18     // data offset 5 words; PSH|ACK
        put16(&f, tcp + 14, 0xFFFF)
        let pseudo = InternetChecksum.pseudoHeaderIPv4(source: sourceIP, destination: destinationIP, protocol: 6,
                                                       length: UInt16(length - tcp))
        put16(&f, tcp + 16, pseudo.folded)
        for i in (tcp + tcpHeader) ..< length { f[i] = UInt8(truncatingIfNeeded: i) }
        return f
    }

    /// The virtio-net header a Linux driver puts in front of a TSO send (§5.1.6.2).
    static var tsoHeader: VirtioNetHeader {
        VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue,
                        headerLength: UInt16(ethernetHeader + ipv4Header + tcpHeader), gsoSize: UInt16(tcpMSS),
                        checksumStart: UInt16(ethernetHeader + ipv4Header), checksumOffset: 16)
    }

    private static func writeEthernet(_ f: inout [UInt8], source: [UInt8], destination: [UInt8]) {
        for i in 0 ..< 6 { f[i] = destination[i]; f[6 + i] = source[i] }
        f[12] = 0x08; f[13] = 0x00
    }

    private static func writeIPv4(_ f: inout [UInt8], protocol proto: UInt8, totalLength: Int, source: UInt32, destination: UInt32) {
        let ip = ethernetHeader
        f[ip] = 0x45
        put16(&f, ip + 2, UInt16(truncatingIfNeeded: totalLength))
        f[ip + 6] = 0x40     // DF
        f[ip + 8] = 64; f[ip + 9] = proto
        put32(&f, ip + 12, source); put32(&f, ip + 16, destination)
        let sum = f.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[ip ..< ip + ipv4Header])) }
        put16(&f, ip + 10, sum)
    }

    static func put16(_ f: inout [UInt8], _ at: Int, _ v: UInt16) { f[at] = UInt8(v >> 8); f[at + 1] = UInt8(v & 0xFF) }
    static func put32(_ f: inout [UInt8], _ at: Int, _ v: UInt32) {
        put16(&f, at, UInt16(v >> 16)); put16(&f, at + 2, UInt16(v & 0xFFFF))
    }

    /// "52:54:00:12:34:56" → bytes; nil when malformed.
    static func parseMAC(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        return parts.count == 6 ? parts : nil
    }

    /// "10.77.0.1" → host-order UInt32; nil when malformed.
    static func parseIPv4(_ s: String) -> UInt32? {
        let parts = s.split(separator: ".").compactMap { UInt8($0) }
        guard parts.count == 4 else { return nil }
        return parts.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}
