import ArgumentParser

@main
struct SwiftVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftvmm",
        abstract: "A userspace VMM for Linux/KVM with E1000 and virtio-net devices.",
        subcommands: [RunCommand.self, DevicesCommand.self, QTestCommand.self])
}
