import VMMNet

/// The benchmarks' TSO send: a 64 KiB IPv4/TCP send as Linux hands it to a NIC with TSO,
/// headers + payload in one frame no larger than a backend's 65,535-byte limit.
package enum TSO {
    package static let frameLength = 65_534
    /// Ethernet, IPv4 and TCP headers, no options.
    package static let headerLength = 14 + 20 + 20
    package static let mss = 1448

    /// The virtio-net header a Linux driver puts in front of a TSO send (§5.1.6.2).
    package static var header: VirtioNetHeader {
        VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue,
                        headerLength: UInt16(headerLength), gsoSize: UInt16(mss),
                        checksumStart: UInt16(14 + 20), checksumOffset: 16)
    }
}
