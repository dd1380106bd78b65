import VMMCore
import VMMNet
import Virtio

extension VirtioNet {
    /// Destination, source and EtherType: anything shorter is not an Ethernet frame.
    static let minimumFrame = 14

    /// Sends what the driver queued on `queue` (§5.1.6.2), suppressing notifications
    /// while busy and re-checking after re-enabling them (§2.7.10) so none is lost.
    /// A notification handles chains until the action's budget says stop
    /// (`ActionCostMeter.shouldDefer`); the rest continues from the I/O loop as a new
    /// action, so a guest that keeps the queue full cannot hold a thread.
    func transmit(_ queue: any Virtqueue) {
        // Linux drives a split ring unless VIRTIO_F_RING_PACKED was negotiated: the pass
        // specialized for it calls the ring directly, not through the protocol's witness
        // table (four calls per frame).
        if let split = queue as? SplitVirtqueue { transmitPass(split) } else { transmitPass(queue) }
    }

    private func transmitPass<Queue: Virtqueue>(_ queue: Queue) {
        guard transport.isLive, queue.isEnabled else { return }
        // The pass works on its own copies of the scratch chain and segment list, moved
        // out of the device and back (no copy, no allocation): used through `self`, each
        // frame retained and released both arrays, ~40 % of a send in memory.
        var chain = self.chain.take()
        var segments = frameSegments.take()
        defer {
            self.chain = chain
            frameSegments = segments
            counters.sent(sentTally)
            sentTally = BackendCounters.Tally()
        }
        let cost = context.cost
        // Fixed for the pass: a backend swap replaces them only under the device lock,
        // which the pass holds.
        let caps = backend.capabilities
        do {
            repeat {
                queue.disableNotifications()
                while !cost.shouldDefer {
                    let head: UInt16
                    if let (single, buffer) = try queue.popReadableBuffer() {
                        // Linux's linear packet: header and frame in one buffer, taken
                        // without the walk into `chain` (two arrays emptied and refilled).
                        head = single
                        cost.descriptors(1)
                        send(CollectionOfOne(buffer), length: UInt64(buffer.length), head: head, segments: &segments, caps: caps)
                    } else if try queue.pop(into: &chain) {
                        head = chain.head
                        // Charged by what the walk visited: one chain may be 1,024 descriptors.
                        cost.descriptors(chain.descriptorCount)
                        send(chain.readable, length: chain.readableLength, head: head, segments: &segments, caps: caps)
                    } else {
                        break
                    }
                    try queue.addUsed(head: head, length: 0)
                    if queue.pendingUsed == queue.size { transport.completeUsed(queue) }
                }
                transport.completeUsed(queue)
                if cost.shouldDefer {
                    transmitContinuations.schedule(queue.index / 2)   // TX queue 2n + 1 is pair n
                    return
                }
            } while queue.enableNotifications()
        } catch {
            transport.fail(queue, error)
        }
    }

    /// One TX chain's readable buffers, `length` bytes in all: a virtio_net_hdr and the
    /// frame, laid out over them in any way (VERSION_1 implies ANY_LAYOUT, §5.1.6.2).
    /// Generic over the buffers, so that a one-buffer chain is resolved with no array of
    /// them.
    private func send(_ readable: some Sequence<GuestBuffer>, length: UInt64, head: UInt16,
                      segments frameSegments: inout [UnsafeRawBufferPointer], caps: BackendCapabilities) {
        frameSegments.removeAllKeepingStorage()
        do {
            try context.memory.resolve(readable, into: &frameSegments)
        } catch {
            context.guestLog.warning("virtio-net.tx-buffer", "TX chain \(head): \(error); dropped")
            counters.dropped(.malformed)
            return
        }
        guard let header = takeHeader(from: &frameSegments) else {
            context.guestLog.warning("virtio-net.tx-short", "TX chain \(head) shorter than the virtio-net header; dropped")
            counters.dropped(.malformed)
            return
        }
        // `length` is the buffers' sum, which held the header; saturating all the same, so
        // a caller's mismatch drops a runt instead of trapping.
        let frameLength = length >= UInt64(VirtioNetHeader.size) ? length - UInt64(VirtioNetHeader.size) : 0
        guard frameLength >= UInt64(VirtioNet.minimumFrame) else {
            context.guestLog.debug("virtio-net.tx-runt", "TX chain \(head): \(frameLength)-byte frame has no Ethernet header; dropped")
            counters.dropped(.malformed)
            return
        }
        if header.isGSO, let problem = segmentationProblem(header, frameLength: frameLength) {
            context.guestLog.warning("virtio-net.tx-gso", "TX chain \(head): \(problem); dropped")
            counters.dropped(.malformed)
            return
        }
        context.cost.bytes(Int(truncatingIfNeeded: frameLength))
        if SoftwareOffload.isNeeded(for: header, backend: caps) || frameLength > UInt64(caps.maxFrameSize) {
            sendCompleted(frameSegments, head: head, header: header, caps: caps)
        } else {
            // The backend takes the header (or no offload was asked): pass the guest's
            // buffers and header through without copying. The header goes as the copy
            // checked above, never as the guest's bytes: those can change after the checks,
            // and the kernel takes a GSO size of 1 from a TAP writer (virtio_net_hdr_to_skb
            // has no lower bound), 65,000 segments of host work for one frame. (Sending a
            // large frame from the guest's buffer with its header in one `write`, 4 % faster
            // at 9014 B, was tried for that reason and removed: Docs/performance.md.)
            record(backend.send(frameSegments, header: caps.virtioNetHeader ? header : nil), bytes: Int(frameLength))
        }
    }

    /// Checksums and segments in software (shared with E1000 in VMMNet), then sends each
    /// resulting frame, none larger than the backend takes.
    private func sendCompleted(_ frameSegments: [UnsafeRawBufferPointer], head: UInt16, header: VirtioNetHeader, caps: BackendCapabilities) {
        do {
            try SoftwareOffload.complete(frameSegments, header: header, maxFrameSize: caps.maxFrameSize,
                                         buffer: scratch.bytes) { frame in
                singleSegment[0] = frame
                record(backend.send(singleSegment, header: nil), bytes: frame.count)
            }
        } catch {
            context.guestLog.warning("virtio-net.tx-offload", "TX chain \(head): \(error); dropped")
            counters.dropped(error.isOversize ? .oversized : .malformed)
        }
        singleSegment[0] = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// Why a GSO request is malformed (virtio 1.2 §5.1.6.2.1: the driver must not set a
    /// GSO type whose feature was not negotiated), or nil.
    private func segmentationProblem(_ header: VirtioNetHeader, frameLength: UInt64) -> String? {
        typealias F = VirtioNetFeature
        let needed: UInt64? = switch header.gsoType & ~VirtioNetHeader.gsoECN {
        case VirtioNetHeader.GSOType.tcpv4.rawValue: F.hostTSO4
        case VirtioNetHeader.GSOType.tcpv6.rawValue: F.hostTSO6
        case VirtioNetHeader.GSOType.udp.rawValue: F.hostUFO
        default: nil
        }
        guard let needed, transport.negotiated(needed) else { return "GSO type \(header.gsoType) was not negotiated" }
        if header.gsoType & VirtioNetHeader.gsoECN != 0, !transport.negotiated(F.hostECN) { return "GSO ECN was not negotiated" }
        if Int(header.gsoSize) < SegmentationLimits.minimumSegmentSize {
            return "segment size \(header.gsoSize) below \(SegmentationLimits.minimumSegmentSize)"
        }
        if frameLength > UInt64(SegmentationLimits.maximumGSOFrame) {
            return "\(frameLength)-byte GSO frame above \(SegmentationLimits.maximumGSOFrame)"
        }
        return nil
    }

    private func record(_ result: SendResult, bytes: Int) {
        context.cost.frames()
        switch result {
        case .sent: sentTally.add(bytes: bytes)
        case let .dropped(reason): counters.dropped(reason)
        }
    }

    /// Reads the 12-byte header from the front of `frameSegments` and removes it from
    /// them, leaving the frame; nil when the chain is shorter than a header. Linux puts
    /// the header in front of the frame in one buffer whenever the skb has room for it
    /// (virtio_net.c `xmit_skb`, `can_push`), which is the first, cheap case.
    private func takeHeader(from frameSegments: inout [UnsafeRawBufferPointer]) -> VirtioNetHeader? {
        let size = VirtioNetHeader.size
        if let first = frameSegments.first, first.count > size {
            frameSegments[0] = UnsafeRawBufferPointer(rebasing: first[size...])
            return VirtioNetHeader(UnsafeRawBufferPointer(rebasing: first[..<size]))
        }
        var raw: (UInt64, UInt32) = (0, 0)
        var filled = 0
        var consumed = 0
        withUnsafeMutableBytes(of: &raw) { out in
            while filled < size, consumed < frameSegments.count {
                let segment = frameSegments[consumed]
                let n = min(segment.count, size - filled)
                ByteCopy.copy(to: UnsafeMutableRawBufferPointer(rebasing: out[filled ..< filled + n]),
                              from: UnsafeRawBufferPointer(rebasing: segment[..<n]))
                filled += n
                if n == segment.count {
                    consumed += 1
                } else {
                    frameSegments[consumed] = UnsafeRawBufferPointer(rebasing: segment[n...])
                }
            }
        }
        guard filled == size else { return nil }
        frameSegments.removeFirst(consumed)   // `resolve` yields no empty views, nor does this
        return withUnsafeBytes(of: &raw) { VirtioNetHeader(UnsafeRawBufferPointer(rebasing: $0[0 ..< size])) }
    }
}

extension FrameError {
    var isOversize: Bool { if case .tooLarge = self { true } else { false } }
}
