#if canImport(Glibc)
import Glibc
#endif
import CNBD
import VMMCore

/// One libnbd handle that completed its handshake. Created on whatever thread connects
/// (the caller of `NBDBackend.init`, then the reconnect thread); once handed to the
/// backend, every call on it is made with the backend's lock held.
final class NBDConnection: @unchecked Sendable {
    let handle: OpaquePointer
    let export: NBDExport
    private var closed = false

    private init(handle: OpaquePointer, export: NBDExport) {
        self.handle = handle
        self.export = export
    }

    /// Connects to `uri` and negotiates, polling in 100 ms steps so that `shouldGiveUp`
    /// (the backend stopping) is noticed; gives up after `timeout` seconds (a server
    /// that accepts and then says nothing must not hold us forever).
    static func connect(uri: String, timeout: Double, shouldGiveUp: () -> Bool) -> Result<NBDConnection, NBDConnectError> {
        guard let h = nbd_create() else { return .failure(.library(NBDConnection.lastError())) }
        // Only plain TCP and unix sockets, and never read files the URI names (tls-psk-file).
        _ = nbd_set_uri_allow_transports(h, UInt32(LIBNBD_ALLOW_TRANSPORT_TCP | LIBNBD_ALLOW_TRANSPORT_UNIX))
        _ = nbd_set_uri_allow_tls(h, Int32(LIBNBD_TLS_DISABLE))
        _ = nbd_set_uri_allow_local_file(h, false)
        _ = nbd_set_handle_name(h, "swiftvmm")
        guard nbd_aio_connect_uri(h, uri) == 0 else {
            let e = NBDConnection.lastError()
            nbd_close(h)
            return .failure(.library(e))
        }
        let deadline = MonotonicDeadline(secondsFromNow: timeout)
        while nbd_aio_is_ready(h) == 0 {
            if nbd_aio_is_dead(h) != 0 || nbd_aio_is_closed(h) != 0 {
                let e = NBDConnection.lastError()
                nbd_close(h)
                return .failure(.library(e))
            }
            if shouldGiveUp() || deadline.hasPassed {
                nbd_close(h)
                return .failure(.timedOut(seconds: timeout))
            }
            if nbd_poll(h, 100) < 0 {
                let e = NBDConnection.lastError()
                nbd_close(h)
                return .failure(.library(e))
            }
        }
        switch NBDExport.read(h) {
        case let .success(export): return .success(NBDConnection(handle: h, export: export))
        case let .failure(e):
            nbd_close(h)
            return .failure(e)
        }
    }

    /// Closes the socket and frees the handle; commands still in flight are aborted
    /// (their completion callbacks may run here). Call with the backend's lock held.
    func close() {
        guard !closed else { return }
        closed = true
        nbd_close(handle)
    }

    deinit { close() }

    var isDead: Bool { nbd_aio_is_dead(handle) != 0 || nbd_aio_is_closed(handle) != 0 }

    /// What the socket should be watched for now (changes after every call into libnbd).
    var wantedEvents: IOEvents {
        let d = nbd_aio_get_direction(handle)
        var events: IOEvents = []
        if d & UInt32(LIBNBD_AIO_DIRECTION_READ) != 0 { events.insert(.readable) }
        if d & UInt32(LIBNBD_AIO_DIRECTION_WRITE) != 0 { events.insert(.writable) }
        return events
    }

    /// libnbd's message and errno for the last failure on this thread.
    static func lastError() -> (message: String, errno: Int32) {
        let message = nbd_get_error().map { String(cString: $0) } ?? "unknown libnbd error"
        let e = nbd_get_errno()
        return (message, e > 0 ? e : EIO)
    }
}

/// Why a connection attempt failed.
enum NBDConnectError: Error, CustomStringConvertible {
    case library((message: String, errno: Int32))
    case timedOut(seconds: Double)
    case badExport(String)

    var description: String {
        switch self {
        case let .library(e): e.message
        case let .timedOut(s): "no answer within \(s) s"
        case let .badExport(why): why
        }
    }
}
