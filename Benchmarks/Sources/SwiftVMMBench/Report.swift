#if canImport(Glibc)
import Glibc
#endif

/// Lines the driver script (Tools/bench/run) collects: `BENCH <key> <value>`, next to a
/// human-readable line on stdout.
enum Report {
    static func value(_ key: String, _ v: Double) { print("BENCH \(key) \(format(v))") }

    static func format(_ v: Double) -> String {
        if v == 0 { return "0" }
        let magnitude = abs(v)
        let digits = magnitude >= 100 ? 0 : magnitude >= 1 ? 2 : 4
        var scale = 1.0
        for _ in 0 ..< digits { scale *= 10 }
        let rounded = (v * scale).rounded() / scale
        return digits == 0 ? String(Int(rounded)) : String(rounded)
    }
}
