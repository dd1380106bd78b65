import VMMCore
import VMMNet

/// Everything a device's network options say, parsed without side effects:
/// `net=tap:NAME | vde:URL | user | stream:unix:PATH | stream:tcp:HOST:PORT`, the options of
/// that backend, `capture=FILE.pcap` and the `fault-*` options.
public struct NetBackendConfig: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case tap(name: String)
        /// An open TAP handed over: a descriptor number, or a name given with QMP `getfd`.
        case tapDescriptor(String)
        /// A connected stream socket handed over, by number or `getfd` name.
        case streamDescriptor(String)
        case vde(url: String)
        case user(UserNetworkConfig)
        case stream(StreamConfig)

        var name: String {
            switch self {
            case .tap, .tapDescriptor: "tap"
            case .vde: "vde"
            case .user: "user"
            case .stream, .streamDescriptor: "stream"
            }
        }
    }

    public var kind: Kind
    public var capturePath: String?
    public var faults: FaultConfig?

    /// Takes the network keys from `options` (the device keeps the rest). Without `net=`
    /// the device gets user networking, as QEMU's NICs do: it needs no privileges.
    public static func take(from options: inout DeviceOptions) throws -> NetBackendConfig {
        let net = try options.take("net") ?? "user"
        let kind: Kind
        if net == "user" {
            kind = .user(try UserNetworkConfig.take(from: &options))
        } else if net.hasPrefix("tap:") {
            let name = String(net.dropFirst(4))
            guard !name.isEmpty else { throw NetBackendError.badValue(option: "net", value: net, reason: "tap: needs an interface name (net=tap:tap0)") }
            guard TapDevice.isValidName(name) else {
                throw NetBackendError.badValue(option: "net", value: net, reason: "not a valid interface name (at most \(TapDevice.maxNameLength) bytes, not '.' or '..', no '/', ':' or white space, '%' only as one '%d')")
            }
            kind = .tap(name: name)
        } else if net.hasPrefix("tap-fd:") || net.hasPrefix("stream-fd:") {
            let reference = String(net.drop { $0 != ":" }.dropFirst())
            guard !reference.isEmpty, reference.utf8.count <= 64 else {
                throw NetBackendError.badValue(option: "net", value: net, reason: "expected a descriptor number or a name given with QMP getfd")
            }
            if reference.allSatisfy(\.isNumber) {
                guard reference.allSatisfy(\.isASCII), let fd = Int32(reference) else {
                    throw NetBackendError.badValue(option: "net", value: net, reason: "'\(reference)' is not a descriptor number")
                }
                guard fd >= 3 else {
                    throw NetBackendError.badValue(option: "net", value: net, reason: "descriptors 0-2 are the standard streams")
                }
            }
            kind = net.hasPrefix("tap-fd:") ? .tapDescriptor(reference) : .streamDescriptor(reference)
        } else if net.hasPrefix("vde:") {
            let rest = net.dropFirst(4)
            // `vde:///run/sw` is libvdeplug's own URL; `vde:/run/sw`, `vde:vxvde://…`, `vde:slirp://` wrap one.
            let url = rest.hasPrefix("//") ? net : String(rest)
            guard !rest.isEmpty else { throw NetBackendError.badValue(option: "net", value: net, reason: "vde: needs a switch path or URL (net=vde:///tmp/sw)") }
            kind = .vde(url: url)
        } else if net.hasPrefix("stream:") {
            let address = try StreamConfig.parse(net.dropFirst(7), option: "net")
            kind = .stream(StreamConfig(address: address, listen: try options.takeBool("server") ?? false))
        } else {
            throw NetBackendError.unknownBackend(net)
        }
        // Options of another backend are a mistake worth naming.
        for key in UserNetworkConfig.optionNames + ["server"] where options.has(key) {
            throw NetBackendError.notApplicable(option: key, backend: kind.name)
        }
        var config = NetBackendConfig(kind: kind)
        if let path = try options.take("capture") {
            guard !path.isEmpty else { throw NetBackendError.badValue(option: "capture", value: path, reason: "needs a file name") }
            config.capturePath = path
        }
        config.faults = try FaultConfig.take(from: &options)
        return config
    }

    public init(kind: Kind, capturePath: String? = nil, faults: FaultConfig? = nil) {
        self.kind = kind
        self.capturePath = capturePath
        self.faults = faults
    }
}
