import VMMCore
import VMMNet

/// The `fault-*` options of a NIC (`--device e1000,fault-drop=1,fault-seed=7`).
extension FaultConfig {
    static let optionNames = ["fault-drop", "fault-dup", "fault-corrupt", "fault-reorder", "fault-delay", "fault-rate", "fault-seed", "fault-dir"]

    /// Takes the fault options; nil when none was given.
    static func take(from options: inout DeviceOptions) throws -> FaultConfig? {
        guard optionNames.contains(where: options.has) else { return nil }
        var c = FaultConfig()
        if let v = try options.take("fault-drop") { c.dropPercent = try percent("fault-drop", v) }
        if let v = try options.take("fault-dup") { c.duplicatePercent = try percent("fault-dup", v) }
        if let v = try options.take("fault-corrupt") { c.corruptPercent = try percent("fault-corrupt", v) }
        if let v = try options.take("fault-reorder") { c.reorderPercent = try percent("fault-reorder", v) }
        if let v = try options.take("fault-delay") {
            guard let ms = Double(v), ms >= 0, ms <= 60_000 else {
                throw NetBackendError.badValue(option: "fault-delay", value: v, reason: "expected milliseconds in 0...60000")
            }
            c.delay = UInt64(ms * 1_000_000)
        }
        if let v = try options.take("fault-rate") {
            // Below 1 bit/s the rate would round to 0, which means "no limit".
            guard let mbps = Double(v), mbps >= 1e-6, mbps <= 1_000_000 else {
                throw NetBackendError.badValue(option: "fault-rate", value: v, reason: "expected Mbit/s from 0.000001 to 1000000")
            }
            c.rateBitsPerSecond = UInt64(mbps * 1_000_000)
        }
        if let v = try options.take("fault-seed") {
            guard let seed = UInt64(v) ?? (v.hasPrefix("0x") ? UInt64(v.dropFirst(2), radix: 16) : nil) else {
                throw NetBackendError.badValue(option: "fault-seed", value: v, reason: "expected an unsigned 64-bit integer")
            }
            c.seed = seed
        }
        if let v = try options.take("fault-dir") {
            guard let d = Direction(rawValue: v) else {
                throw NetBackendError.badValue(option: "fault-dir", value: v, reason: "expected tx, rx or both")
            }
            c.direction = d
        }
        return c
    }

    private static func percent(_ option: String, _ v: String) throws(NetBackendError) -> Double {
        guard let p = Double(v.hasSuffix("%") ? String(v.dropLast()) : v), p >= 0, p <= 100 else {
            throw .badValue(option: option, value: v, reason: "expected a percentage in 0...100")
        }
        return p
    }
}
