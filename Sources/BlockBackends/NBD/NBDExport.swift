import CNBD

/// What the server says about its export, checked: the server is a peer and may be
/// hostile, so every number is validated or clamped here and nothing downstream traps.
struct NBDExport: Equatable, Sendable {
    var size: UInt64
    var readOnly: Bool
    var canFlush: Bool
    var canTrim: Bool
    var canZero: Bool
    /// The server's minimum block size (1 if it set none), a power of two ≤ 64 KiB.
    var minimumBlockSize: UInt32
    /// The largest payload one read or write may carry (the server's maximum, at most 32 MiB).
    var maximumPayload: Int

    /// NBD's traditional payload limit when the server advertises none (and our cap).
    static let defaultMaximumPayload = 32 << 20

    static func read(_ h: OpaquePointer) -> Result<NBDExport, NBDConnectError> {
        let size = nbd_get_size(h)
        guard size >= 0, let usize = UInt64(exactly: size) else {
            return .failure(.badExport("cannot get the export size: \(NBDConnection.lastError().message)"))
        }
        // A flag the server does not answer is taken the safe way (read-only, nothing optional).
        let readOnly = nbd_is_read_only(h) != 0
        let minimum = nbd_get_block_size(h, Int32(LIBNBD_SIZE_MINIMUM))
        let maximum = nbd_get_block_size(h, Int32(LIBNBD_SIZE_MAXIMUM))
        let min = minimum > 0 ? UInt32(clamping: minimum) : 1
        guard min.nonzeroBitCount == 1, min <= 65536 else {
            return .failure(.badExport("the server's minimum block size \(minimum) is not a power of two up to 64 KiB"))
        }
        var payload = maximum > 0 ? Int(clamping: maximum) : defaultMaximumPayload
        payload = Swift.min(payload, defaultMaximumPayload)
        // Whole 4 KiB units keep every split piece aligned for any block size we offer.
        payload = payload / 4096 * 4096
        guard payload >= 4096 else {
            return .failure(.badExport("the server's maximum block size \(maximum) is below 4096 bytes"))
        }
        return .success(NBDExport(size: usize, readOnly: readOnly, canFlush: nbd_can_flush(h) == 1,
                                  canTrim: !readOnly && nbd_can_trim(h) == 1, canZero: !readOnly && nbd_can_zero(h) == 1,
                                  minimumBlockSize: min, maximumPayload: payload))
    }
}
