#if canImport(Glibc)
import Glibc
#endif
import CLinux
import CSlirp

/// libslirp's sockets, watched by a private epoll instance. libslirp describes what to
/// watch on every `slirp_pollfds_fill` (its sockets come and go); this mirrors that list
/// into the private epoll set, and the one fd of that set sits on the VM's I/O loop — so
/// slirp's sockets never mix with the loop's own registrations, and a socket number
/// libslirp closed and reused cannot confuse another component's registration.
/// Guarded by the backend's slirp lock.
final class SlirpPollSet {
    let epollFD: Int32
    /// fd → epoll events currently registered.
    private var watched: [Int32: UInt32] = [:]
    /// The last fill's list: slirp's poll index → (fd, SLIRP_POLL_* events).
    private var filled: [(fd: Int32, events: Int32)] = []
    /// What happened since the last poll, by fd (epoll events).
    private var ready: [Int32: UInt32] = [:]
    /// Filled fds that are listening sockets (`hostfwd`), and every filled fd already
    /// looked at: each is asked once, until libslirp lets it go.
    private var listeners: Set<Int32> = []
    private var known: Set<Int32> = []
    /// The socket libslirp just asked about is a listener with a connection waiting: the
    /// one socket it registers next is the one it accepted (libslirp handles each socket
    /// right after asking for its events: slirp_pollfds_poll, tcp_connect). Taken by that
    /// registration (`takeAccepting`) and cleared when the poll ends: left set, the
    /// guest's own sockets opened later were counted as forwarded ones, past their cap.
    private var acceptingNow = false

    /// Whether the socket being registered is one libslirp just accepted; once.
    func takeAccepting() -> Bool {
        defer { acceptingNow = false }
        return acceptingNow
    }

    /// slirp_pollfds_poll returned.
    func endPoll() { acceptingNow = false }
    private var eventBuffer = [epoll_event](repeating: epoll_event(), count: 128)

    init?() {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        if epollFD < 0 { return nil }
    }

    deinit { close(epollFD) }

    // MARK: fill

    func beginFill() { filled.removeAll(keepingCapacity: true) }

    /// add_poll: returns slirp's index for this fd.
    func add(fd: Int32, slirpEvents: Int32) -> Int32 {
        filled.append((fd, slirpEvents))
        return Int32(filled.count - 1)
    }

    /// Makes the epoll set match the fill; with `pauseAccepts`, listeners are left out.
    func endFill(pauseAccepts: Bool = false) {
        var wanted: [Int32: UInt32] = [:]
        for (fd, ev) in filled { wanted[fd, default: 0] |= SlirpPollSet.epollEvents(ev) }
        for fd in wanted.keys where watched[fd] == nil && !known.contains(fd) { noteIfListener(fd) }
        if pauseAccepts {
            for fd in listeners { wanted[fd] = nil }
        }
        for fd in watched.keys where wanted[fd] == nil { forget(fd: fd) }
        for (fd, ev) in wanted where watched[fd] != ev {
            var e = epoll_event(events: ev, data: epoll_data_t(fd: fd))
            if watched[fd] == nil {
                if epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &e) != 0, errno == EEXIST { epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &e) }
            } else if epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &e) != 0, errno == ENOENT {
                // The kernel dropped it when slirp closed the socket; this is a new one with the same number.
                epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &e)
            }
            watched[fd] = ev
        }
    }

    /// Stops watching `fd`: no longer in the fill, or a listener while accepts are paused.
    func forget(fd: Int32) {
        guard watched.removeValue(forKey: fd) != nil else { return }
        epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
        ready.removeValue(forKey: fd)
    }

    /// unregister_poll_fd: libslirp is about to close `fd`, whose number may come back as
    /// another socket.
    func release(fd: Int32) {
        forget(fd: fd)
        known.remove(fd)
        listeners.remove(fd)
    }

    /// Looks at a newly filled fd once: a listening socket (SO_ACCEPTCONN) or not.
    private func noteIfListener(_ fd: Int32) {
        known.insert(fd)
        var accepting: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) == 0, accepting != 0 { listeners.insert(fd) }
    }

    // MARK: poll

    /// Collects what is ready now (never waits).
    func collect() {
        ready.removeAll(keepingCapacity: true)
        let n = eventBuffer.withUnsafeMutableBufferPointer { epoll_wait(epollFD, $0.baseAddress, Int32($0.count), 0) }
        for i in 0 ..< max(0, Int(n)) { ready[eventBuffer[i].data.fd, default: 0] |= eventBuffer[i].events }
    }

    /// get_revents: SLIRP_POLL_* for slirp's index from the last fill.
    ///
    /// An error or hang-up (which epoll reports whatever was asked) goes to libslirp only
    /// where it asked to read. Its poll handler reads a socket on any of IN, PRI, ERR and
    /// HUP, and the read asserts that its buffer toward the guest has room (socket.c
    /// `soread`: `assert(buf_len != 0)`), which libslirp made sure of only when it asked
    /// for IN: a remote peer that filled that buffer and then reset the connection aborted
    /// the process. Where it asked to write, the error goes as OUT instead, and its write
    /// (or connect) path meets the error and closes the connection.
    func revents(index: Int32) -> Int32 {
        acceptingNow = false
        guard index >= 0, Int(index) < filled.count, let ev = ready[filled[Int(index)].fd] else { return 0 }
        let asked = filled[Int(index)].events
        acceptingNow = ev & EPOLLIN.rawValue != 0 && listeners.contains(filled[Int(index)].fd)
        let reads = asked & Int32(SLIRP_POLL_IN | SLIRP_POLL_PRI) != 0
        let failed = ev & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
        var r: Int32 = 0
        if ev & EPOLLIN.rawValue != 0 { r |= Int32(SLIRP_POLL_IN) }
        if ev & EPOLLOUT.rawValue != 0 { r |= Int32(SLIRP_POLL_OUT) }
        if ev & EPOLLPRI.rawValue != 0 { r |= Int32(SLIRP_POLL_PRI) }
        if reads {
            if ev & EPOLLERR.rawValue != 0 { r |= Int32(SLIRP_POLL_ERR) }
            if ev & EPOLLHUP.rawValue != 0 { r |= Int32(SLIRP_POLL_HUP) }
            return r & (asked | Int32(SLIRP_POLL_ERR | SLIRP_POLL_HUP))
        }
        if failed { r |= Int32(SLIRP_POLL_OUT) }
        return r & asked
    }

    private static func epollEvents(_ slirp: Int32) -> UInt32 {
        var e: UInt32 = 0
        if slirp & Int32(SLIRP_POLL_IN) != 0 { e |= EPOLLIN.rawValue }
        if slirp & Int32(SLIRP_POLL_OUT) != 0 { e |= EPOLLOUT.rawValue }
        if slirp & Int32(SLIRP_POLL_PRI) != 0 { e |= EPOLLPRI.rawValue }
        return e
    }
}
