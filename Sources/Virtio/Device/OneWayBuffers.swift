import VMMCore

extension VirtioDeviceContext {
    /// The host views of a one-way request's buffers — the device-writable ones the device
    /// fills (`writable`), or the device-readable ones it reads — into `segments`. Nil when
    /// they are there; else why the chain cannot be served (it goes back empty): buffers of
    /// the other direction (the driver MUST NOT place them: virtio 1.2 §5.3.6.1,
    /// §5.4.6.2), no bytes at all, or memory that is not RAM.
    public func oneWayBuffers(of chain: DescriptorChain, writable: Bool,
                              into segments: inout [UnsafeMutableRawBufferPointer]) -> String? {
        let (wanted, other, bytes) = writable ? (chain.writable, chain.readable.count, chain.writableLength)
                                              : (chain.readable, chain.writable.count, chain.readableLength)
        guard other == 0, bytes > 0 else {
            return "chain \(chain.head): \(other) buffers the device may not \(writable ? "fill" : "read"), \(bytes) bytes it may"
        }
        segments.removeAll(keepingCapacity: true)
        do {
            try memory.resolve(wanted, into: &segments)
        } catch {
            return "chain \(chain.head): \(error)"
        }
        return nil
    }
}
