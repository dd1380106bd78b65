#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Logging
import VMMCore

/// Serves one device on one unix socket: one client at a time, the next one after it
/// leaves, until `stop()`. Runs on its own thread (the client's accesses are this
/// device's "vCPU exits"); backends and timers stay on the shared I/O loop.
public final class VFIOUserServer: @unchecked Sendable {
    public let device: ServedDevice
    public let listener: UnixSocketListener
    private let log: RateLimitedLogger
    private let logger: Logger
    private let stopFD: Int32
    private var thread: WorkerThread?
    /// Clients served so far.
    public private(set) var clients = 0

    public init(device: ServedDevice, listener: UnixSocketListener, logger: Logger) throws(VFIOUserError) {
        self.device = device; self.listener = listener; self.logger = logger
        log = RateLimitedLogger(logger)
        stopFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard stopFD >= 0 else { throw .system("eventfd", errno: errno) }
        DescriptorCloser.shared.start()
    }

    deinit { close(stopFD) }

    public func start() {
        // The control role from before the first client message.
        thread = WorkerThread(name: "vfio-user", role: .control) { [self] in serve() }
    }

    private func serve() {
        while let fd = listener.accept(stopFD: stopFD) {
            clients += 1
            logger.info("vfio-user: client \(clients) attached to \(device.name) on \(listener.path)")
            let connection = VFIOUserConnection(fd: fd, stopFD: stopFD, maxMessageSize: Session.maxMessageSize,
                                                maxFDs: Session.maxFDsPerMessage)
            let why = Session(device: device, log: log).run(on: connection)
            DescriptorCloser.shared.close(fd)   // its queue may hold files the client sent
            device.clientGone()
            if let why { logger.notice("vfio-user: client left \(device.name): \(why)") }
            else { logger.info("vfio-user: client left \(device.name)") }
        }
    }

    /// Ends the current session and the accept loop, joins the thread, removes the socket.
    public func stop() {
        _ = clinux_eventfd_signal(stopFD)
        thread?.join()
        thread = nil
        listener.closeAndRemove()
    }
}
