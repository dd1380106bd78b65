import VMMCore

/// Everything a block device's disk options say, parsed without side effects:
/// `disk=PATH | nbd://HOST[:PORT]/EXPORT | nbd+unix:///EXPORT?socket=PATH`, `readonly=`,
/// `direct=` (files), `block-size=`, `reconnect-timeout=` and `request-timeout=` (NBD).
public struct DiskBackendConfig: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// A raw image file or a block device.
        case file(path: String, direct: Bool)
        /// An NBD export; `uri` is handed to libnbd as given.
        case nbd(uri: String, reconnectTimeout: Double, requestTimeout: Double)
    }

    public var kind: Kind
    public var readOnly: Bool
    /// The logical block size the guest is told; nil: the backend's own (512, or what the
    /// NBD server or block device needs).
    public var blockSize: UInt32?
    /// Requests accepted at once before `submit` answers false.
    public var queueLimit: Int

    public static let defaultReconnectTimeout = 30.0
    public static let maxReconnectTimeout = 3600.0
    /// Seconds a connected NBD server may leave a request unanswered (0: never given up
    /// on). Off by default, as in Linux's nbd driver (timeout 0: `nbd_xmit_timeout` only
    /// logs a possibly stuck request) and QEMU's NBD client (no request timeout): a slow
    /// but live server (a large flush or trim on busy storage) would otherwise have its
    /// requests re-sent and finally failed, and a re-sent write may race the first copy
    /// still running on the server.
    public static let defaultRequestTimeout = 0.0
    public static let defaultQueueLimit = 256

    public init(kind: Kind, readOnly: Bool = false, blockSize: UInt32? = nil, queueLimit: Int = DiskBackendConfig.defaultQueueLimit) {
        self.kind = kind
        self.readOnly = readOnly
        self.blockSize = blockSize
        self.queueLimit = queueLimit
    }

    /// Takes the disk keys from `options` (the device keeps the rest).
    public static func take(from options: inout DeviceOptions) throws(OptionError) -> DiskBackendConfig {
        guard let disk = try options.take("disk") else { throw .missingOption(device: options.device, key: "disk") }
        guard !disk.isEmpty else { throw .badValue(key: "disk", value: disk, reason: "needs a file name or an nbd:// URI") }
        let readOnly = try options.takeBool("readonly") ?? false
        var blockSize: UInt32?
        if let text = try options.take("block-size") {
            guard let n = UInt32(text), n == 512 || n == 4096 else {
                throw .badValue(key: "block-size", value: text, reason: "expected 512 or 4096")
            }
            blockSize = n
        }
        let kind: Kind
        if let scheme = NBDAddress.scheme(of: disk) {
            try NBDAddress.validate(disk, scheme: scheme)
            if let v = try options.take("direct") { throw .badValue(key: "direct", value: v, reason: "applies to disk files only, not to NBD") }
            kind = .nbd(uri: disk,
                        reconnectTimeout: try seconds("reconnect-timeout", &options) ?? defaultReconnectTimeout,
                        requestTimeout: try seconds("request-timeout", &options) ?? defaultRequestTimeout)
        } else {
            for key in ["reconnect-timeout", "request-timeout"] {
                if let v = try options.take(key) { throw .badValue(key: key, value: v, reason: "applies to NBD disks only") }
            }
            guard !disk.contains("\0") else { throw .badValue(key: "disk", value: disk, reason: "a path cannot contain NUL") }
            kind = .file(path: disk, direct: try options.takeBool("direct") ?? false)
        }
        return DiskBackendConfig(kind: kind, readOnly: readOnly, blockSize: blockSize)
    }

    /// A number of seconds in 0...3600 under `key`, if given.
    private static func seconds(_ key: String, _ options: inout DeviceOptions) throws(OptionError) -> Double? {
        guard let text = try options.take(key) else { return nil }
        guard let t = Double(text), t.isFinite, t >= 0, t <= maxReconnectTimeout else {
            throw .badValue(key: key, value: text, reason: "expected seconds in 0...\(Int(maxReconnectTimeout))")
        }
        return t
    }
}
