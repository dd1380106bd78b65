/// Bounds on segmentation requests from a guest, so one request buys bounded work.
public enum SegmentationLimits {
    /// The smallest segment size Linux itself ever asks for: `TCP_MIN_GSO_SIZE`
    /// (include/net/tcp.h: TCP_MIN_SND_MSS 48 − MAX_TCP_OPTION_SPACE 40). A request for
    /// less is malformed; at 1 byte a 64 KiB frame would become 65,536 frames.
    public static let minimumSegmentSize = 8
    /// The largest virtio-net GSO frame: Linux's `GSO_MAX_SIZE` (64 KiB) of payload and
    /// headers, with room for the link-layer headers in front (virtio 1.2 §5.1.6.2 lets
    /// the device refuse larger ones). e1000 keeps its own 256 KiB packet bound.
    public static let maximumGSOFrame = 65_536 + 256
}
