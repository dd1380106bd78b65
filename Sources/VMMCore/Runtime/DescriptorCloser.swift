#if canImport(Glibc)
import Glibc
#endif

/// Closes the descriptors a peer passed in (SCM_RIGHTS) that the process does not keep,
/// and the sockets peers are connected through, on a thread of its own. The last close of
/// a file can wait on whoever holds its other end: a TCP socket with SO_LINGER waits for
/// its unsent data to be read, a FUSE file's flush for its daemon, and a unix socket's
/// last close releases the files still queued in it, with the same waits. A thread that
/// serves a peer (vfio-user, QMP) must not wait on that peer: a vfio-user client that sent
/// a lingering socket once kept `serve` from stopping on SIGTERM (Docs/robustness.md).
///
/// Bounded: at most `capacity` descriptors wait, far below the 1,024 descriptors the
/// process keeps in hand (`ResourceLimits`): a client that blocks the closing thread for
/// good (a socket nested in a socket it passed) could otherwise have it hold enough to
/// leave the whole process without descriptors. Past that a descriptor is closed where
/// it is given up, as before: the thread serving that client may then wait on it.
public final class DescriptorCloser: @unchecked Sendable {
    public static let shared = DescriptorCloser()
    public static let capacity = 64

    private let condition = ThreadCondition()
    private var waiting: [Int32] = []
    private var started = false
    private var running = false
    /// Runs as long as the process; never joined.
    private var thread: WorkerThread?

    /// Starts the closing thread, once. Called as a server is set up, from a thread that
    /// may still make threads (confined threads make none); the thread enters the `closer`
    /// role. Where it never started, descriptors are closed where they are given up.
    public func start() {
        let first = condition.withLock { () -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        thread = WorkerThread(name: "closer", role: .closer) { [self] in run() }
    }

    /// Closes `fd` on the closing thread (at once where there is none, or it is full).
    public func close(_ fd: Int32) {
        guard fd >= 0 else { return }
        let queued = condition.withLock { () -> Bool in
            guard running, waiting.count < Self.capacity else { return false }
            waiting.append(fd)
            condition.broadcast()
            return true
        }
        if !queued { _ = Glibc.close(fd) }
    }

    public func close(_ fds: [Int32]) { fds.forEach { close($0) } }

    private func run() {
        condition.withLock { running = true }
        var batch: [Int32] = []
        while true {
            condition.withLock {
                _ = condition.wait { !waiting.isEmpty }
                swap(&batch, &waiting)
            }
            for fd in batch { _ = Glibc.close(fd) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
