/// Options a command takes once. ArgumentParser keeps the last of a repeated one without
/// a word (`--kernel a --kernel b` booted b, `--qmp` twice served only the second), while
/// a repeated key inside `--device` is refused: the same rule for both now.
protocol SingleValuedOptions {
    /// The long names of the options that take one value, as typed (`--kernel`).
    static var singleValuedOptions: [String] { get }
}

extension SingleValuedOptions {
    /// The first of `singleValuedOptions` that `arguments` (after the subcommand) give
    /// more than once, in either spelling (`--name value`, `--name=value`).
    static func repeatedOption(in arguments: some Sequence<String>) -> String? {
        var seen: Set<String> = []
        var takesValue = false
        for argument in arguments {
            if takesValue { takesValue = false; continue }   // the value of the option before
            if argument == "--" { break }
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard singleValuedOptions.contains(name) else { continue }
            if !seen.insert(name).inserted { return name }
            takesValue = !argument.contains("=")
        }
        return nil
    }
}

extension RunCommand: SingleValuedOptions {
    static let singleValuedOptions = ["--kernel", "--initrd", "--cmdline", "--memory", "--cpus", "--serial", "--qmp",
                                      "--name", "--log-level", "--sandbox", "--runas"]
}

extension ServeCommand: SingleValuedOptions {
    static let singleValuedOptions = ["--qmp", "--log-level", "--sandbox", "--runas"]
}

extension QTestCommand: SingleValuedOptions {
    static let singleValuedOptions = ["--memory", "--socket", "--sandbox"]
}
