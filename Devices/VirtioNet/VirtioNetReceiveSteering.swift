import VMMNet
import Virtio

extension VirtioNet {
    /// The receive queue for `frame`. With several active pairs (VQ_PAIRS_SET), a hash of
    /// the flow — IP addresses and TCP/UDP ports — picks the pair, so a flow stays in order
    /// on one queue and different flows interrupt different vCPUs (§5.1.6.5.5 leaves the
    /// choice to the device when RSS is not negotiated). Anything else goes to queue 0,
    /// as does a frame whose pair's queue is not enabled (the caller's fallback).
    @inline(__always)
    func receiveQueueIndex(for frame: UnsafeRawBufferPointer) -> Int {
        activeQueuePairs > 1 ? hashedQueueIndex(for: frame) : 0
    }

    private func hashedQueueIndex(for frame: UnsafeRawBufferPointer) -> Int {
        guard let parsed = FrameParser.parse(frame, lengths: .headersOnly),
              let network = parsed.network else { return 0 }
        // FNV-1a over the addresses (IPv4 12..<20, IPv6 8..<40 of the IP header) and ports.
        var hash: UInt32 = 2_166_136_261
        func mix(_ start: Int, _ count: Int) {
            guard start >= 0, count >= 0, start <= frame.count - count else { return }
            for i in start ..< start + count { hash = (hash ^ UInt32(frame[i])) &* 16_777_619 }
        }
        switch network {
        case .ipv4: mix(parsed.networkOffset + 12, 8)
        case .ipv6: mix(parsed.networkOffset + 8, 32)
        }
        if parsed.isTCP || parsed.isUDP, let l4 = parsed.transportOffset { mix(l4, 4) }
        return 2 * Int(hash % UInt32(activeQueuePairs))
    }
}
