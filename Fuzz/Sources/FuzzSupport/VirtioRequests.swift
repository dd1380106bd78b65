import VMMCore

/// What the virtio fuzz targets (rng, console) post as requests: chains of 1–3 buffers
/// from the input, with their bookkeeping.
public enum VirtioFuzzChain {
    public typealias Buffer = (address: GuestAddress, length: UInt32, writable: Bool)

    /// 1–3 buffers of up to 256 KiB, mostly inside `pool` (overlapping one another, up to
    /// 512 KiB past it), sometimes at any address; writable when a byte exceeds
    /// `readableUpTo`. `coversRings`: a writable buffer lies below the pool, in RAM the
    /// rings may occupy, so the device's writes there stand for the driver's.
    public static func make(_ input: inout FuzzInput, pool: GuestAddress, readableUpTo: UInt8)
        -> (buffers: [Buffer], coversRings: Bool) {
        var buffers: [Buffer] = []
        var coversRings = false
        for _ in 0 ..< 1 + input.choose(3) {
            let length = input.bool() ? UInt32(input.byte()) : UInt32(input.integer(UInt16.self)) << 2
            let address = input.byte() < 24 ? GuestAddress(input.integer(UInt64.self))
                                            : GuestAddress(pool.raw + UInt64(input.integer(UInt16.self)) << 2)
            let writable = input.byte() > readableUpTo
            if address.raw < pool.raw, writable { coversRings = true }
            buffers.append((address, length, writable))
        }
        return (buffers, coversRings)
    }
}

/// The requests a split test queue has out. The test driver hands out descriptors in turn
/// without waiting for them to come back, so a chain that reuses ones still out rewrites
/// a request the device may not have read yet (one waiting for a rate limit or for input):
/// `post` says so, and the target then counts it as scribbling.
public struct PostedRequests {
    private let queueSize: Int
    private var byHead: [UInt16: (descriptors: Int, writable: UInt64)] = [:]
    private var descriptorsOut = 0

    public init(queueSize: Int) { self.queueSize = queueSize }

    /// Records a chain posted at `head`; false if it reused descriptors still out.
    public mutating func post(head: UInt16, _ buffers: [VirtioFuzzChain.Buffer]) -> Bool {
        let fits = descriptorsOut + buffers.count <= queueSize
        descriptorsOut += buffers.count
        byHead[head] = (buffers.count, buffers.filter(\.writable).reduce(0) { $0 + UInt64($1.length) })
        return fits
    }

    /// The used element `id` came back: the writable bytes its chain had (nil if unknown).
    public mutating func returned(_ id: UInt32) -> UInt64? {
        guard let request = byHead.removeValue(forKey: UInt16(truncatingIfNeeded: id)) else { return nil }
        descriptorsOut -= request.descriptors
        return request.writable
    }

    /// The device was reset: nothing is out.
    public mutating func reset() {
        byHead.removeAll()
        descriptorsOut = 0
    }
}
