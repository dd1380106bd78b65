#if canImport(Glibc)
import Glibc
#endif
import CLinux
import VMMNet

/// An open `/dev/net/tun` file descriptor bound to a TAP interface with a 12-byte
/// virtio-net header in front of every frame (IFF_VNET_HDR + TUNSETVNETHDRSZ), so
/// virtio-net's offload metadata passes through untranslated (virtio 1.2 §5.1.6).
struct TapDevice {
    let fd: Int32
    /// The interface name the kernel bound (equals the requested one).
    let name: String
    /// True when this process created the interface: it is non-persistent and the
    /// kernel deletes it when `fd` closes. False: an existing (persistent) TAP.
    let created: Bool

    static let maxNameLength = Int(IFNAMSIZ) - 1

    /// What the kernel takes as an interface name (net/core/dev.c `dev_valid_name`: 1 to
    /// 15 bytes, not "." or "..", no '/', ':' or white space), with '%' only as one "%d",
    /// which `dev_alloc_name` replaces by the first free number (`tap%d`, as QEMU allows).
    static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1 ... maxNameLength).contains(bytes.count), name != ".", name != ".." else { return false }
        // The kernel's isspace (lib/ctype.c) also takes 0xA0, Latin-1's no-break space.
        let whiteSpace: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0xA0]
        guard !bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || whiteSpace.contains($0) }) else { return false }
        let percents = bytes.indices.filter { bytes[$0] == UInt8(ascii: "%") }
        return percents.isEmpty || (percents.count == 1 && percents[0] + 1 < bytes.count && bytes[percents[0] + 1] == UInt8(ascii: "d"))
    }

    static func open(name: String) throws(NetBackendError) -> TapDevice {
        let option = "net"
        let value = "tap:\(name)"
        let existed = if_nametoindex(name) != 0
        let fd = Glibc.open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw .system(option: option, value: value, call: "open /dev/net/tun", errno: errno,
                          hint: "needs the tun module and read/write access to /dev/net/tun")
        }
        var chosen = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        let flags = Int16(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        guard clinux_tun_set_iff(fd, name, flags, &chosen) == 0 else {
            let e = errno
            close(fd)
            let hint: String? = switch e {
            case EPERM, EACCES:
                existed ? "the TAP belongs to another user; create it with: ip tuntap add \(name) mode tap user $USER vnet_hdr"
                        : "creating a TAP needs CAP_NET_ADMIN; or attach to a persistent one: ip tuntap add \(name) mode tap user $USER vnet_hdr"
            case EINVAL: existed ? "'\(name)' exists and is not a TAP interface (or is a multi-queue one)" : nil
            case EBUSY: "another process is attached to it"
            default: nil
            }
            throw .system(option: option, value: value, call: "TUNSETIFF", errno: e, hint: hint)
        }
        guard clinux_tun_set_vnet_hdr_size(fd, Int32(VirtioNetHeader.size)) == 0 else {
            let e = errno
            close(fd)
            throw .system(option: option, value: value, call: "TUNSETVNETHDRSZ", errno: e, hint: nil)
        }
        let bound = chosen.withUnsafeBufferPointer { p in p.baseAddress.map { String(cString: $0) } ?? name }
        return TapDevice(fd: fd, name: bound, created: !existed)
    }

    /// A TAP opened by someone else (a privileged parent, a QMP client) and handed over as
    /// `fd`: it must be a TAP with IFF_NO_PI and IFF_VNET_HDR (the framing this backend
    /// uses; `ip tuntap add … vnet_hdr`, or QEMU's and libvirt's way of opening it). Takes
    /// ownership of `fd` (closed on error). The interface stays when the fd closes only if
    /// it is persistent, as for any TAP.
    static func adopt(fd: Int32, option: String, value: String) throws(NetBackendError) -> TapDevice {
        func fail(_ reason: String) -> NetBackendError {
            close(fd)
            return .badValue(option: option, value: value, reason: reason)
        }
        guard fcntl(fd, F_GETFD) >= 0 else {
            throw .badValue(option: option, value: value, reason: "file descriptor \(fd) is not open")
        }
        var name = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        var flags: Int16 = 0
        guard clinux_tun_get_iff(fd, &name, &flags) == 0 else { throw fail("file descriptor \(fd) is not a TUN/TAP device") }
        let required = Int16(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        guard flags & Int16(IFF_TAP) != 0 else { throw fail("file descriptor \(fd) is a TUN (layer 3) device, not a TAP") }
        guard flags & required == required else {
            throw fail("the TAP was opened without IFF_NO_PI and IFF_VNET_HDR (open it with both, as QEMU and libvirt do)")
        }
        guard clinux_tun_set_vnet_hdr_size(fd, Int32(VirtioNetHeader.size)) == 0 else { throw fail("TUNSETVNETHDRSZ failed: errno \(errno)") }
        let current = fcntl(fd, F_GETFL)
        guard current >= 0, fcntl(fd, F_SETFL, current | O_NONBLOCK) == 0 else { throw fail("cannot make it non-blocking") }
        let bound = name.withUnsafeBufferPointer { p in p.baseAddress.map { String(cString: $0) } ?? "" }
        return TapDevice(fd: fd, name: bound, created: false)
    }

    /// TUNSETOFFLOAD: which offloads frames the kernel hands us may use. TSO implies
    /// partial checksums, so without `.checksum` nothing is enabled (the kernel refuses it).
    func setOffloads(_ offloads: NetOffloads) -> Bool {
        clinux_tun_set_offload(fd, TapDevice.tunFlags(offloads)) == 0
    }

    static func tunFlags(_ offloads: NetOffloads) -> UInt32 {
        guard offloads.contains(.checksum) else { return 0 }
        var flags = UInt32(TUN_F_CSUM)
        if offloads.contains(.tso4) { flags |= UInt32(TUN_F_TSO4) }
        if offloads.contains(.tso6) { flags |= UInt32(TUN_F_TSO6) }
        if offloads.contains(.tsoECN), offloads.contains(.tso4) || offloads.contains(.tso6) { flags |= UInt32(TUN_F_TSO_ECN) }
        if offloads.contains(.ufo) { flags |= UInt32(TUN_F_UFO) }
        return flags
    }
}
