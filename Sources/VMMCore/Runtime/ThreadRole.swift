#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What a VMM thread does, for confinement (`swiftvmm run/serve/qtest` install a seccomp
/// allow-list per role: Docs/security.md). Every long-lived thread says its role once its
/// setup is done; in a library user's process nothing happens unless a confinement was
/// installed.
public enum ThreadRole: Int32, Sendable, CaseIterable {
    case main = 0
    case vcpu = 1
    case io = 2
    case control = 3
    case disk = 4
    case diskConnect = 5
    /// `DescriptorCloser`'s thread: only closes.
    case closer = 6
}

public enum ThreadConfinement {
    private static let hook = Mutex<(@Sendable (ThreadRole) -> Void)?>(nil)
    private static let enforcing = Atomic<Bool>(false)

    /// Installed by the CLI (the Sandbox module); nil turns confinement off. `enforcing`:
    /// forbidden calls end the process (false: they are only logged, `--sandbox log`).
    public static func install(enforcing: Bool = true, _ confine: (@Sendable (ThreadRole) -> Void)?) {
        hook.withLock {
            $0 = confine
            self.enforcing.store(confine != nil && enforcing, ordering: .relaxed)
        }
    }

    /// The calling thread is set up and starts its work as `role`.
    public static func enter(_ role: ThreadRole) {
        guard let confine = hook.withLock({ $0 }) else { return }
        confine(role)
        pthread_setspecific(confinedKey, UnsafeRawPointer(bitPattern: Int(role.rawValue) + 1))
    }

    /// Whether threads will be confined once they enter their roles: the CLI turned the
    /// sandbox on. Set before any device or backend is made, so they can refuse what a
    /// confined thread could not do later (a backend whose teardown needs forbidden calls).
    public static var isInstalled: Bool { hook.withLock { $0 != nil } }

    /// Whether a forbidden call will end the process (`isInstalled`, and not only logging).
    public static var isEnforcing: Bool { hook.withLock { _ in enforcing.load(ordering: .relaxed) } }

    /// Whether the calling thread runs confined: it cannot open new files, devices or
    /// sockets beyond what its role needs (a backend swap then takes descriptors instead).
    public static var currentThreadIsConfined: Bool { pthread_getspecific(confinedKey) != nil }

    /// Whether the calling thread may remove files: unconfined, or the main thread, whose
    /// allow-list has `unlink` for the sockets the VMM removes at exit (Docs/security.md).
    public static var currentThreadMayRemoveFiles: Bool {
        guard let role = pthread_getspecific(confinedKey) else { return true }
        return Int(bitPattern: role) - 1 == Int(ThreadRole.main.rawValue)
    }

    private static let confinedKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}
