#if canImport(Glibc)
import Glibc
#endif

/// A joinable pthread running one closure in a thread role (the libraries avoid
/// Foundation's Thread). `join()` waits for the closure to return; it is called once, by
/// whoever owns the thread, or never, for a thread that runs as long as the process.
public final class WorkerThread: @unchecked Sendable {
    private var thread: pthread_t?

    /// Starts `body` on a new thread, which enters `role` first. (`name` documents the
    /// thread's job; like the I/O loop's thread it is not set: Glibc's module does not
    /// export pthread_setname_np.) Nil, with `errno` set, when no thread could be made.
    public init?(name: String, role: ThreadRole, _ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let box = Unmanaged.passRetained(Box { ThreadConfinement.enter(role); body() })
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let box = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        guard r == 0 else {
            box.release()
            errno = r
            return nil
        }
        thread = tid
    }

    /// Waits for the thread to finish; later calls return at once.
    public func join() {
        guard let t = thread else { return }
        thread = nil
        pthread_join(t, nil)
    }
}
