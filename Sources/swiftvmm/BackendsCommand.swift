import ArgumentParser
import BlockBackends
import NetBackends
import VMMCore

/// `swiftvmm backends`: the `net=` backends and the filter options every NIC takes, and
/// the `disk=` backends every block device takes.
struct BackendsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backends", abstract: "List network and disk backends and the options NICs and block devices take for them.")

    func run() {
        section("Backends (net=…)", NetBackendHelp.backends)
        section("User networking (net=user)", NetBackendHelp.userOptions)
        section("Filters (any backend)", NetBackendHelp.filters)
        section("Disks (disk=…, every block device)", DiskBackendHelp.options)
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
