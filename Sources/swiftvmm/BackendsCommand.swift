import ArgumentParser
import NetBackends
import VMMCore

/// `swiftvmm backends`: the `net=` backends and the filter options every NIC takes.
struct BackendsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backends", abstract: "List network backends and the options every NIC takes for them.")

    func run() {
        section("Backends (net=…)", NetBackendHelp.backends)
        section("User networking (net=user)", NetBackendHelp.userOptions)
        section("Filters (any backend)", NetBackendHelp.filters)
    }

    private func section(_ title: String, _ options: [OptionHelp]) {
        print(title)
        let width = options.map { $0.key.count + 1 + $0.value.count }.max() ?? 0
        for o in options {
            let left = "\(o.key)=\(o.value)"
            print("    \(left)\(String(repeating: " ", count: max(1, width - left.count + 2)))\(o.help)")
        }
    }
}
