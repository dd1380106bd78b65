#if canImport(Glibc)
import Glibc
#endif
import Sandbox
import VirtioConsole
import VMMCore

/// Files the VMM writes as it runs (`capture=` of each NIC, a virtio-console's
/// `chardev=file:`, `--serial file:`) and the sockets it listens on (`--qmp`, `serve`'s and
/// `qtest`'s `--socket`, a stream backend's `server=on`, a virtio-console's
/// `chardev=socket:`), checked before anything is opened: two writers on one file interleave
/// into something no tool reads, a capture or console on the kernel, the initrd or a disk
/// image would empty it when the machine starts, and two listeners on one path failed
/// with a message that blamed another process, or an old file that this run had made.
enum OutputFiles {
    struct Named {
        /// Who names it, as the user wrote it (`--serial`, `--device 'e1000,…'`).
        let owner: String
        let path: String
    }

    /// Refuses an output named twice, or naming one of `inputs` (files the VM reads or
    /// keeps). Existing files are compared by device and inode (links and symlinks
    /// included), others by their resolved directory and name.
    static func refuseShared(outputs: [Named], inputs: [Named]) throws(UserInputError) {
        var seen: [String: Named] = [:]
        for input in inputs { seen[identity(input.path)] = seen[identity(input.path)] ?? input }
        for output in outputs {
            let key = identity(output.path)
            if let first = seen[key] {
                throw UserInputError("\(output.owner): \(output.path) names the same file as \(first.owner) (\(first.path)), which it would overwrite")
            }
            seen[key] = output
        }
    }

    /// The check for a list of `--device` texts alone (`serve`, `qtest`): captures against
    /// one another and against disk images. Texts that do not parse are left to the
    /// device's own error.
    static func refuseShared(devices: [String], listening: [Named] = []) throws(UserInputError) {
        let specs = devices.compactMap { text in (try? DeviceSpec.parse(text)).map { (text: "--device '\(text)'", spec: $0) } }
        try refuseShared(outputs: listening + captures(specs) + streamListeners(specs) + consoles(specs), inputs: disks(specs))
    }

    /// The Unix socket of each stream backend that listens (`net=stream:unix:PATH,server=on`).
    static func streamListeners(_ specs: [(text: String, spec: DeviceSpec)]) -> [Named] {
        let prefix = "stream:unix:"
        return specs.compactMap { entry in
            guard let net = value("net", entry.spec), net.hasPrefix(prefix),
                  value("server", entry.spec).flatMap(DeviceOptions.bool) == true else { return nil }
            return Named(owner: entry.text, path: String(net.dropFirst(prefix.count)))
        }
    }

    /// The sockets devices listen on for the user (a stream backend's `server=on`, a
    /// console's `chardev=socket:`): handed to the `--runas` user, who could otherwise
    /// neither connect to them (mode 0600, root's) nor remove them at exit. Sockets only,
    /// each made by this run: a `file:` may name a file that was there before (whoever's),
    /// and root must not give it away; its descriptor is open already.
    static func listenersForTheUser(devices: [String]) -> [String] {
        let specs = devices.compactMap { text in (try? DeviceSpec.parse(text)).map { (text: text, spec: $0) } }
        let consoleSockets = specs.compactMap { entry -> String? in
            if case let .socket(path)? = consoleTarget(entry.spec) { path } else { nil }
        }
        return streamListeners(specs).map(\.path) + consoleSockets
    }

    /// The file or socket of each virtio-console's `chardev=`.
    static func consoles(_ specs: [(text: String, spec: DeviceSpec)]) -> [Named] {
        specs.compactMap { entry in
            switch consoleTarget(entry.spec) {
            case let .file(path)?, let .socket(path)?: Named(owner: entry.text, path: path)
            default: nil
            }
        }
    }

    /// A console's `chardev=` as the device reads it (nil when absent or malformed: the
    /// device's own error says so).
    private static func consoleTarget(_ spec: DeviceSpec) -> ConsoleTarget? {
        value("chardev", spec).flatMap { try? ConsoleTarget(option: $0) }
    }

    /// The `capture=` file of each device that has one.
    static func captures(_ specs: [(text: String, spec: DeviceSpec)]) -> [Named] {
        specs.compactMap { entry in value("capture", entry.spec).map { Named(owner: entry.text, path: $0) } }
    }

    /// The image file of each disk that has one (not an NBD export).
    static func disks(_ specs: [(text: String, spec: DeviceSpec)]) -> [Named] {
        specs.compactMap { entry in
            value("disk", entry.spec).flatMap { $0.hasPrefix("nbd") ? nil : Named(owner: entry.text, path: $0) }
        }
    }

    private static func value(_ key: String, _ spec: DeviceSpec) -> String? {
        spec.options.pairs.last(where: { $0.key == key })?.value
    }

    private static func identity(_ path: String) -> String {
        var st = stat()
        if stat(path, &st) == 0 { return "inode \(st.st_dev):\(st.st_ino)" }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let resolved = realpath(directory, nil) else { return "path " + path }
        defer { free(resolved) }
        return "path " + String(cString: resolved) + "/" + name
    }
}

extension RunAs {
    /// Gives `sockets` and the devices' listening sockets to the user; one warning line
    /// for each that stays root's (the user cannot connect to it).
    func handOver(_ sockets: [String], devices: [String]) {
        for path in sockets + OutputFiles.listenersForTheUser(devices: devices) {
            if let e = handOver(path) {
                reportWarning("--runas \(user): \(path) stays root's: \(String(cString: strerror(e)))")
            }
        }
    }
}
