#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// Files the VMM writes as it runs (`capture=` of each NIC, `--serial file:`): two writers
/// on one file would interleave into something neither tool can read, so a file named
/// twice is refused before anything is opened.
enum OutputFiles {
    /// `outputs`: who writes (as the user wrote it) and the path. Paths are compared by
    /// the file they name: the directory resolved, the last component as given.
    static func refuseShared(_ outputs: [(owner: String, path: String)]) throws(UserInputError) {
        var seen: [String: String] = [:]
        for (owner, path) in outputs {
            let key = canonical(path)
            if let first = seen[key] {
                throw UserInputError("\(owner): \(path) is also written by \(first)")
            }
            seen[key] = owner
        }
    }

    /// The `capture=` file of each device that has one.
    static func captures(_ specs: [(text: String, spec: DeviceSpec)]) -> [(owner: String, path: String)] {
        specs.compactMap { entry in
            entry.spec.options.pairs.last(where: { $0.key == "capture" }).map { (entry.text, $0.value) }
        }
    }

    private static func canonical(_ path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard let resolved = realpath(directory, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved) + "/" + name
    }
}
