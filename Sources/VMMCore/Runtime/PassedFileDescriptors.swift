#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// File descriptors handed to the VMM by name, as QEMU's `getfd` keeps them: a client
/// passes an open TAP or socket over the control socket (SCM_RIGHTS) and names it, and a
/// backend option refers to it (`net=tap-fd:NAME`), so nothing has to be opened inside the
/// sandbox and no privilege is needed. A backend that takes a descriptor owns it from then
/// on. At most `limit` names are held; replacing a name closes the descriptor it had.
///
/// QMP `add-fd` puts descriptors in numbered sets instead, which a backend names as
/// `/dev/fdset/N` (QEMU's convention); taking from a set takes its oldest descriptor.
public final class PassedFileDescriptors: Sendable {
    public static let limit = 64
    private let named = Mutex<[String: Int32]>([:])
    public struct SetEntry: Sendable, Equatable {
        public let fd: Int32
        public let opaque: String?
    }
    private let sets = Mutex<[Int: [SetEntry]]>([:])

    public init() {}

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case full
        case badName(String)
        public var description: String {
            switch self {
            case .full: "no more than \(PassedFileDescriptors.limit) named file descriptors are kept"
            case let .badName(n): "'\(n)' is not a usable descriptor name (1-64 characters, not all digits, not /dev/fdset/…)"
            }
        }
    }

    /// Keeps `fd` under `name` (taking ownership: it is closed if refused).
    public func keep(_ fd: Int32, as name: String) throws(Failure) {
        // `/dev/fdset/N` names a set (`take`): kept under that name, a descriptor could
        // never be taken or closed again.
        guard (1 ... 64).contains(name.utf8.count), !name.allSatisfy(\.isNumber), !name.hasPrefix(Self.setPrefix) else {
            DescriptorCloser.shared.close(fd)
            throw .badName(name)
        }
        let outcome = named.withLock { map -> (replaced: Int32?, full: Bool) in
            if let old = map[name] { map[name] = fd; return (old, false) }
            guard map.count < Self.limit else { return (nil, true) }
            map[name] = fd
            return (nil, false)
        }
        if outcome.full { DescriptorCloser.shared.close(fd); throw .full }
        if let old = outcome.replaced { DescriptorCloser.shared.close(old) }
    }

    /// Hands the descriptor to its new owner and forgets the name (`/dev/fdset/N`: the
    /// oldest descriptor of set N).
    public func take(_ name: String) -> Int32? {
        if name.hasPrefix(Self.setPrefix) {
            guard let id = Int(name.dropFirst(Self.setPrefix.count)) else { return nil }
            return sets.withLock { s -> Int32? in
                guard var list = s[id], !list.isEmpty else { return nil }
                let first = list.removeFirst()
                s[id] = list.isEmpty ? nil : list
                return first.fd
            }
        }
        return named.withLock { $0.removeValue(forKey: name) }
    }

    /// QMP `add-fd`: adds `fd` to set `id` (a new set when nil); returns the set's id.
    public func add(_ fd: Int32, toSet id: Int?, opaque: String?) throws(Failure) -> Int {
        let result = sets.withLock { s -> Int? in
            guard s.values.reduce(0, { $0 + $1.count }) < Self.limit else { return nil }
            let chosen = id ?? ((s.keys.max() ?? -1) + 1)
            s[chosen, default: []].append(SetEntry(fd: fd, opaque: opaque))
            return chosen
        }
        guard let result else { DescriptorCloser.shared.close(fd); throw .full }
        return result
    }

    /// QMP `remove-fd`: closes one descriptor of a set, or the whole set; false when absent.
    public func remove(set id: Int, fd: Int32?) -> Bool {
        let closing = sets.withLock { s -> [Int32] in
            guard let list = s[id] else { return [] }
            let (gone, kept) = (list.filter { fd == nil || $0.fd == fd }, list.filter { fd != nil && $0.fd != fd })
            s[id] = kept.isEmpty ? nil : kept
            return gone.map(\.fd)
        }
        closing.forEach { DescriptorCloser.shared.close($0) }
        return !closing.isEmpty
    }

    /// QMP `query-fdsets`.
    public var fdSets: [(id: Int, entries: [SetEntry])] { sets.withLock { $0.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } } }

    static let setPrefix = "/dev/fdset/"

    /// Closes a kept descriptor (QMP `closefd`); false when the name is unknown. Sets are
    /// `remove-fd`'s: QEMU's `closefd` does not reach them either.
    @discardableResult
    public func close(named name: String) -> Bool {
        guard let fd = named.withLock({ $0.removeValue(forKey: name) }) else { return false }
        DescriptorCloser.shared.close(fd)
        return true
    }

    public var names: [String] { named.withLock { $0.keys.sorted() } }

    // MARK: Descriptors inherited at start (`tap-fd:N`, `stream-fd:N`)

    /// Descriptors 3 and up that the process was started with, as `recordInherited()`
    /// found them; nil before it ran. A number in `tap-fd:N` must be one of them, and each
    /// is taken once: a number the VMM opened itself (KVM, a disk, the epoll set), or one
    /// another device already owns, would be closed by a failed adoption and then reused.
    private static let inherited = Mutex<Set<Int32>?>(nil)

    /// Notes the descriptors open now; the CLI calls it first thing in `main`.
    public static func recordInherited() {
        var found: Set<Int32> = []
        if let dir = opendir("/proc/self/fd") {
            let own = dirfd(dir)
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if let fd = Int32(name), fd >= 3, fd != own { found.insert(fd) }
            }
            closedir(dir)
        }
        inherited.withLock { $0 = found }
    }

    /// Whether `fd` was inherited and not taken yet; takes it.
    public static func takeInherited(_ fd: Int32) -> Bool {
        inherited.withLock { $0?.remove(fd) != nil }
    }

    deinit {
        for fd in named.withLock({ $0.values }) { DescriptorCloser.shared.close(fd) }
        for list in sets.withLock({ $0.values }) { for e in list { DescriptorCloser.shared.close(e.fd) } }
    }
}
