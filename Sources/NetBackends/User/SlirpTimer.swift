import CSlirp
import VMMCore

/// One libslirp timer (`timer_new_opaque`): when it expires the backend hands its id
/// and opaque back to `slirp_handle_timer`. Guarded by the backend's slirp lock.
final class SlirpTimer: @unchecked Sendable {
    let id: SlirpTimerId
    let callbackOpaque: UnsafeMutableRawPointer?
    var token: TimerToken?
    /// Bumped by every timer_mod, so a stale expiry is recognised.
    var generation: UInt64 = 0
    var freed = false

    init(id: SlirpTimerId, callbackOpaque: UnsafeMutableRawPointer?) {
        self.id = id
        self.callbackOpaque = callbackOpaque
    }
}
