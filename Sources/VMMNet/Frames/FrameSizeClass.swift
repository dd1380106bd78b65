/// The frame-size buckets of the 8254x statistics registers (SDM §13.7: PRC64 … PRC1522,
/// PTC64 … PTC1522), also handy for virtio-net counters. Lengths there count from the
/// destination address through the FCS, so a caller without an FCS adds 4.
public enum FrameSizeClass: Int, Sendable, CaseIterable {
    case upTo64, upTo127, upTo255, upTo511, upTo1023, upTo1522, over1522

    /// Inlinable: counted per frame on both NICs' data paths, where the call across
    /// modules cost as much as the switch.
    @inlinable
    public init(length: Int) {
        switch length {
        case ...64: self = .upTo64
        case ...127: self = .upTo127
        case ...255: self = .upTo255
        case ...511: self = .upTo511
        case ...1023: self = .upTo1023
        case ...1522: self = .upTo1522
        default: self = .over1522
        }
    }
}
