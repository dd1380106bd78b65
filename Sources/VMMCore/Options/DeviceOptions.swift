/// An error in user input: a device list entry, an option, a value. The message names
/// the option and says what is wrong, in one line.
public enum OptionError: Error, Equatable, CustomStringConvertible {
    case emptySpec
    case unknownDevice(String, known: [String])
    case unknownOption(device: String, key: String)
    case badValue(key: String, value: String, reason: String)
    case missingValue(key: String)
    case duplicate(key: String)
    case missingOption(device: String, key: String)

    public var description: String {
        switch self {
        case .emptySpec: "empty device specification"
        case let .unknownDevice(n, known): "unknown device type '\(n)' (known: \(known.joined(separator: ", ")))"
        case let .unknownOption(d, k): "unknown option '\(k)' for device \(d)"
        case let .badValue(k, v, r): "bad value '\(v)' for option '\(k)': \(r)"
        case let .missingValue(k): "option '\(k)' needs a value (\(k)=…)"
        case let .duplicate(k): "option '\(k)' given more than once"
        case let .missingOption(d, k): "device \(d) needs option '\(k)'"
        }
    }
}

/// A parsed device list entry: `NAME[,key=value]...` (the syntax of `--device` and qtest device lists).
public struct DeviceSpec: Equatable, Sendable {
    public var name: String
    public var options: DeviceOptions

    /// Parses `e1000,net=tap:tap0,mac=52:54:00:12:34:56`. Keys may repeat (`hostfwd=…` twice);
    /// whether a key may repeat is decided by whoever takes it.
    public static func parse(_ text: String) throws(OptionError) -> DeviceSpec {
        var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let name = parts.first?.trimmingSpaces(), !name.isEmpty else { throw .emptySpec }
        parts.removeFirst()
        var pairs: [(String, String)] = []
        for p in parts {
            guard let eq = p.firstIndex(of: "=") else {
                if p.isEmpty { continue }
                throw .missingValue(key: p)
            }
            let key = String(p[..<eq]), value = String(p[p.index(after: eq)...])
            guard !key.isEmpty else { throw .badValue(key: p, value: value, reason: "empty option name") }
            pairs.append((key, value))
        }
        return DeviceSpec(name: name, options: DeviceOptions(device: name, pairs: pairs))
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

/// The key=value options of one device. A device (and the backend factory) *take* the
/// keys it understands; whatever is left afterwards is an unknown option and an error.
public struct DeviceOptions: Equatable, Sendable {
    public let device: String
    public private(set) var pairs: [(key: String, value: String)]

    public init(device: String, pairs: [(String, String)] = []) {
        self.device = device
        self.pairs = pairs.map { (key: $0.0, value: $0.1) }
    }

    public static func == (a: DeviceOptions, b: DeviceOptions) -> Bool {
        a.device == b.device && a.pairs.elementsEqual(b.pairs, by: { $0.key == $1.key && $0.value == $1.value })
    }

    public var isEmpty: Bool { pairs.isEmpty }
    public func has(_ key: String) -> Bool { pairs.contains { $0.key == key } }

    /// Removes and returns the single value of `key`; an error if it is given twice.
    public mutating func take(_ key: String) throws(OptionError) -> String? {
        let all = takeAll(key)
        guard all.count <= 1 else { throw .duplicate(key: key) }
        return all.first
    }

    /// Removes and returns every value of a repeatable key, in order.
    public mutating func takeAll(_ key: String) -> [String] {
        let values = pairs.filter { $0.key == key }.map(\.value)
        pairs.removeAll { $0.key == key }
        return values
    }

    public mutating func takeInteger<T: FixedWidthInteger>(_ key: String, in range: ClosedRange<T>) throws(OptionError) -> T? {
        guard let v = try take(key) else { return nil }
        let parsed: T? = v.hasPrefix("0x") ? T(v.dropFirst(2), radix: 16) : T(v)
        guard let n = parsed, range.contains(n) else {
            throw .badValue(key: key, value: v, reason: "expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    public mutating func takeBool(_ key: String) throws(OptionError) -> Bool? {
        guard let v = try take(key) else { return nil }
        guard let value = Self.bool(v) else { throw .badValue(key: key, value: v, reason: "expected on or off") }
        return value
    }

    /// The spellings of on and off every boolean option takes; nil for anything else.
    public static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "on", "true", "yes", "1": true
        case "off", "false", "no", "0": false
        default: nil
        }
    }

    public mutating func takeMAC(_ key: String = "mac") throws(OptionError) -> MACAddress? {
        guard let v = try take(key) else { return nil }
        guard let mac = MACAddress(v) else { throw .badValue(key: key, value: v, reason: "expected a MAC address like 52:54:00:12:34:56") }
        guard !mac.isMulticast else { throw .badValue(key: key, value: v, reason: "a NIC's address must be unicast (first byte even)") }
        // Linux's is_valid_ether_addr refuses 00:00:00:00:00:00 too: e1000_probe fails
        // ("Invalid MAC Address") and virtio_net picks a random one.
        guard mac.array.contains(where: { $0 != 0 }) else { throw .badValue(key: key, value: v, reason: "a NIC's address cannot be all zeros") }
        return mac
    }

    /// Call after every taker ran: any key left is unknown to the device.
    public func rejectUnknown() throws(OptionError) {
        if let first = pairs.first { throw .unknownOption(device: device, key: first.key) }
    }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ b: [UInt8]) {
        var a = [UInt8](repeating: 0, count: 6)
        for i in 0 ..< min(6, b.count) { a[i] = b[i] }
        bytes = (a[0], a[1], a[2], a[3], a[4], a[5])
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            // UInt8(_:radix:) also takes a sign ("+5"): insist on two hex digits.
            guard p.count == 2, p.allSatisfy(\.isHexDigit), let b = UInt8(p, radix: 16) else { return nil }
            out.append(b)
        }
        self.init(out)
    }

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }
    public var isMulticast: Bool { bytes.0 & 1 == 1 }
    public static let broadcast = MACAddress([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])

    /// QEMU's convention 52:54:00:12:34:(56 + index) for NICs without `mac=`.
    public static func defaultNIC(index: Int) -> MACAddress {
        MACAddress([0x52, 0x54, 0x00, 0x12, 0x34, UInt8(truncatingIfNeeded: 0x56 + index)])
    }

    public static func == (a: MACAddress, b: MACAddress) -> Bool { a.array == b.array }
    public func hash(into h: inout Hasher) { h.combine(array) }
    public var description: String { array.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") }
}
