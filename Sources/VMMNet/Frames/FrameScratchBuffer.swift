/// A reusable buffer for `SoftwareOffload.complete` / `TSOSegmenter.segment`, allocated
/// once per device. Not thread-safe: the owner uses it under its device lock.
public final class FrameScratchBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    public init(capacity: Int = SoftwareOffload.recommendedBufferSize) {
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, HeaderSize.ethernet), alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}
