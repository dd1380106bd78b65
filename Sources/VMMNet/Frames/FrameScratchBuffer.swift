import VMMCore

/// A reusable buffer for `SoftwareOffload.complete` / `TSOSegmenter.segment`, allocated
/// once per device. Not thread-safe: the owner uses it under its device lock.
///
/// Sized for the largest frame or TSO send but mostly used for far less, so it lives in
/// `ZeroFilledPages`: zero until written, resident only as far as frames reach.
public final class FrameScratchBuffer: @unchecked Sendable {
    /// Exactly the requested capacity (at least an Ethernet header).
    public let bytes: UnsafeMutableRawBufferPointer
    private let pages: ZeroFilledPages

    public init(capacity: Int = SoftwareOffload.recommendedBufferSize) {
        let count = max(capacity, HeaderSize.ethernet)
        pages = ZeroFilledPages(byteCount: count)
        bytes = UnsafeMutableRawBufferPointer(rebasing: pages.bytes[0 ..< count])
    }
}
