import ArgumentParser
import DeviceCatalog
import VMMCore

/// `swiftvmm devices`: the device types this build knows and their options.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List device types and their options.")

    func run() {
        let types = DeviceCatalog.registry.types
        if types.isEmpty { print("(no device types registered)") }
        for type in types {
            print("\(type.typeName) — \(type.summary)")
            let width = type.optionHelp.map { $0.key.count + 1 + $0.value.count }.max() ?? 0
            for o in type.optionHelp {
                let left = "\(o.key)=\(o.value)"
                print("    \(left)\(String(repeating: " ", count: max(1, width - left.count + 2)))\(o.help)")
            }
        }
        print("Every NIC also takes net=BACKEND, capture= and fault-* options: see `swiftvmm backends`.")
        print("Every device also takes id=NAME (how QMP names it) and, under `run` and `qtest`, slot=N[:F] (its PCI slot and function).")
    }
}
