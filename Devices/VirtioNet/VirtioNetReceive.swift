import VMMCore
import VMMNet
import Virtio

extension VirtioNet {
    static let maximumReceiveFrame = 1 << 20
    /// The most descriptors one received frame may spread over, across all its chains:
    /// one action's share (`ActionCostMeter.deferAt`; vhost-net allows UIO_MAXIOV, 1024, in
    /// `get_rx_bufs`). Linux posts mergeable buffers of 1.5 KiB and more, one descriptor
    /// each, so a 64 KiB frame takes 44. Chains of empty writable descriptors (2,047 a
    /// chain with an indirect table) had one frame attempt walk two million of them, on
    /// every kick, uncharged.
    /// (Computed: a `static let` initialised from another module's value is initialised
    /// lazily, and its `swift_once` check ran on every frame.)
    static var maximumReceiveDescriptors: Int { ActionCostMeter.deferAt.descriptors }

    /// One frame from the backend (on the I/O loop). Returns false only when the guest has
    /// no room for it: the backend keeps it and offers it again after `resumeReceive()`.
    public func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        context.lock.withLock { context.cost.measure { receiveLocked(frame, header: header) } }
    }

    /// A backend's burst (a TAP read loop's 64 frames at most): the frames are added to the
    /// used rings as they come and published when the burst ends, with one fence and at
    /// most one interrupt per queue, as vhost-net's `vhost_add_used_and_signal_n` does. The
    /// driver sees nothing later than the end of the backend's loop turn. Bursts do not
    /// nest (a backend delivers on the I/O loop); one inside another runs as part of it.
    public func receiveBurst(_ deliver: () -> Void) {
        let outermost = context.lock.withLock { () -> Bool in
            defer { receivingBurst = true }
            return !receivingBurst
        }
        deliver()
        guard outermost else { return }
        context.lock.withLock {
            context.cost.measure {
                receivingBurst = false
                // Bus mastering turned off during the burst (another vCPU): no write to
                // guest memory now; the entries go out with the next completion, as
                // virtio-blk's wait for bus mastering (PCI 3.0 §6.2.2).
                guard transport.isLive else { return }
                for pair in 0 ..< configuration.queuePairs {
                    if let queue = transport.queue(2 * pair), queue.pendingUsed > 0 { transport.completeUsed(queue) }
                }
            }
        }
    }

    /// Why receive chains cannot take a frame (they go back empty, the frame is dropped).
    enum BadReceiveBuffer: CustomStringConvertible {
        case notRAM(GuestMemoryError)
        case headerDoesNotFit(length: UInt64)
        case tooManyDescriptors

        var description: String {
            switch self {
            case let .notRAM(error): "\(error)"
            case let .headerDoesNotFit(length): "the first buffer holds \(length) bytes, less than the \(VirtioNetHeader.size)-byte header"
            case .tooManyDescriptors: "the frame would spread over more than \(VirtioNet.maximumReceiveDescriptors) descriptors"
            }
        }
    }

    /// What one delivery fills: the chain, the host views of its buffers, and the chains
    /// a mergeable frame spreads over. A delivery moves it out of the device into a local
    /// and back (`Optional.take`: no copy, no allocation, no empty arrays left in its
    /// place to be made and released per frame): used through `self`, the arrays were
    /// retained and released around each call they were passed to.
    struct ReceiveScratch {
        var chain = DescriptorChain()
        var segments: [UnsafeMutableRawBufferPointer] = []
        var chains: [(head: UInt16, capacity: UInt64)] = []
    }

    private func receiveLocked(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> Bool {
        // The queue is borrowed, not retained (`withQueue`): this runs once per frame.
        func deliver(_ queue: any Virtqueue) -> Bool { receive(frame, header: header, on: queue) }
        let steered = receiveQueueIndex(for: frame)
        guard transport.isLive,
              let accepted = transport.withQueue(steered, deliver) ?? (steered != 0 ? transport.withQueue(0, deliver) : nil)
        else {
            counters.dropped(.linkDown)
            return true
        }
        return accepted
    }

    /// Delivers `frame` on `queue`. False: no buffers; the frame is kept by the backend.
    private func receive(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?, on queue: any Virtqueue) -> Bool {
        // Nothing a backend can deliver is larger (64 KiB GSO frames); this also keeps
        // every length below within 32 bits.
        guard frame.count <= VirtioNet.maximumReceiveFrame else {
            counters.dropped(.oversized)
            return true
        }
        // §5.1.4.1: with VIRTIO_NET_F_MTU the device "MUST NOT pass received packets that
        // exceed mtu (plus low level ethernet header length) size with gso_type NONE or
        // ECN"; an 802.1Q tag is part of that header.
        if frame.count > receiveFrameLimit, header?.isGSO != true,
           frame.count - (VLAN.tag(of: frame) == nil ? 0 : HeaderSize.vlanTag) > receiveFrameLimit {
            counters.dropped(.oversized)
            return true
        }
        guard filter.evaluate(frame).accepted else {
            counters.dropped(.filtered)
            return true
        }
        guard let (payload, outHeader) = prepare(frame, header: header) else { return true }
        // Deliveries do not nest (the device lock); a fresh one would only allocate.
        var scratch = receiveScratch.take() ?? ReceiveScratch()
        defer { receiveScratch = scratch }
        do {
            let delivered = transport.negotiated(VirtioNetFeature.mergeableRXBuffers)
                ? try deliverMergeable(payload, header: outHeader, queue: queue, &scratch)
                : try deliverSingle(payload, header: outHeader, queue: queue, &scratch)
            guard delivered else {
                receiveStalls &+= 1
                waitForBuffers(queue)
                return false
            }
        } catch {
            transport.fail(queue, error)
        }
        return true
    }

    /// The header the guest gets and the bytes to copy. A header from the backend passes
    /// through when it uses only offloads the guest accepted; a partial checksum the guest
    /// did not accept is completed here; anything else is refused and counted.
    @inline(__always)
    private func prepare(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader?) -> (UnsafeRawBufferPointer, VirtioNetHeader)? {
        guard var h = header else { return (frame, VirtioNetHeader(numBuffers: 1)) }
        h.numBuffers = 1
        // Only the flags the guest knows pass (§5.1.6.4.1: the device sets NEEDS_CSUM and
        // DATA_VALID, nothing else it did not negotiate), and an ECN bit without a GSO type
        // is no header a kernel wrote: Linux's virtio_net_hdr_to_skb refuses it.
        h.flags &= VirtioNetHeader.needsChecksum | VirtioNetHeader.dataValid
        if !h.isGSO, h.gsoType != 0 {
            counters.dropped(.malformed)
            return nil
        }
        if h.isGSO {
            let type = h.gsoType & ~VirtioNetHeader.gsoECN
            let needed: NetOffloads = switch type {
            case VirtioNetHeader.GSOType.tcpv4.rawValue: .tso4
            case VirtioNetHeader.GSOType.tcpv6.rawValue: .tso6
            case VirtioNetHeader.GSOType.udp.rawValue: .ufo
            default: .init(rawValue: 1 << 31)
            }
            let ecn: NetOffloads = h.gsoType & VirtioNetHeader.gsoECN != 0 ? .tsoECN : []
            guard receiveOffloads.isSuperset(of: needed.union(ecn)) else {
                context.guestLog.warning("virtio-net.rx-gso", "backend delivered GSO type \(h.gsoType) the guest did not accept; dropped")
                counters.dropped(.malformed)
                return nil
            }
        }
        if !receiveOffloads.contains(.checksum) {
            h.flags &= ~VirtioNetHeader.dataValid
            if h.flags & VirtioNetHeader.needsChecksum != 0 {
                guard frame.count <= scratch.bytes.count else {
                    counters.dropped(.oversized)
                    return nil
                }
                let copy = UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0 ..< frame.count])
                ByteCopy.copy(to: copy, from: frame)
                do {
                    try ChecksumOffload.complete(copy, start: Int(h.checksumStart), offset: Int(h.checksumOffset))
                } catch {
                    counters.dropped(.malformed)
                    return nil
                }
                h.flags &= ~VirtioNetHeader.needsChecksum
                h.checksumStart = 0
                h.checksumOffset = 0
                return (UnsafeRawBufferPointer(copy), h)
            }
        }
        return (frame, h)
    }

    /// Without MRG_RXBUF each frame takes one chain, which must hold header and frame
    /// (§5.1.6.3.1). A frame too large for the chain is dropped and the chain kept.
    private func deliverSingle(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, queue: any Virtqueue,
                               _ scratch: inout ReceiveScratch) throws(VirtqueueError) -> Bool {
        guard try queue.pop(into: &scratch.chain) else { return false }
        context.cost.descriptors(scratch.chain.descriptorCount)
        let needed = UInt64(VirtioNetHeader.size) + UInt64(frame.count)
        guard scratch.chain.writableLength >= needed else {
            queue.unpop(1)
            context.guestLog.debug("virtio-net.rx-too-big", "\(frame.count)-byte frame does not fit a \(scratch.chain.writableLength)-byte buffer")
            counters.dropped(.oversized)
            return true
        }
        if let buffer = wholeFrameBuffer(scratch.chain, needed: needed) {
            writeFrame(frame, header: header, to: buffer)
            try queue.addUsed(head: scratch.chain.head, length: UInt32(truncatingIfNeeded: needed))
            finishDelivery(queue, bytes: frame.count)
            return true
        }
        scratch.segments.removeAllKeepingStorage()
        do {
            try context.memory.resolve(scratch.chain.writable, into: &scratch.segments)
        } catch {
            scratch.chains.removeAllKeepingStorage()
            scratch.chains.append((scratch.chain.head, 0))
            return try dropWithBadBuffer(queue, chains: scratch.chains, .notRAM(error))
        }
        writeFrame(frame, header: header, to: scratch.segments)
        try queue.addUsed(head: scratch.chain.head, length: UInt32(truncatingIfNeeded: needed))
        finishDelivery(queue, bytes: frame.count)
        return true
    }

    /// With MRG_RXBUF a frame spreads over as many chains as it needs; `num_buffers` in
    /// the first says how many (§5.1.6.4). Either all fit or nothing is taken.
    private func deliverMergeable(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, queue: any Virtqueue,
                                  _ scratch: inout ReceiveScratch) throws(VirtqueueError) -> Bool {
        let needed = UInt64(VirtioNetHeader.size) + UInt64(frame.count)
        guard try queue.pop(into: &scratch.chain) else { return false }
        var descriptors = scratch.chain.descriptorCount
        context.cost.descriptors(descriptors)
        if let buffer = wholeFrameBuffer(scratch.chain, needed: needed) {
            var header = header
            header.numBuffers = 1
            writeFrame(frame, header: header, to: buffer)
            try queue.addUsed(head: scratch.chain.head, length: UInt32(truncatingIfNeeded: needed))
            finishDelivery(queue, bytes: frame.count)
            return true
        }
        scratch.chains.removeAllKeepingStorage()
        scratch.segments.removeAllKeepingStorage()
        var capacity: UInt64 = 0
        var badBuffer: BadReceiveBuffer?
        while true {
            do {
                try context.memory.resolve(scratch.chain.writable, into: &scratch.segments)
            } catch {
                badBuffer = .notRAM(error)
            }
            let length = scratch.chain.writableLength
            scratch.chains.append((scratch.chain.head, length))
            capacity &+= length
            // The header must sit in the first buffer, where the driver looks for it.
            if scratch.chains.count == 1 && length < UInt64(VirtioNetHeader.size) {
                badBuffer = badBuffer ?? .headerDoesNotFit(length: length)
            }
            if descriptors > Self.maximumReceiveDescriptors {
                badBuffer = badBuffer ?? .tooManyDescriptors
            }
            if badBuffer != nil || capacity >= needed { break }
            guard try queue.pop(into: &scratch.chain) else {
                queue.unpop(UInt16(truncatingIfNeeded: scratch.chains.count))
                return false
            }
            let walked = scratch.chain.descriptorCount
            context.cost.descriptors(walked)
            descriptors += walked
        }
        if let badBuffer {
            return try dropWithBadBuffer(queue, chains: scratch.chains, badBuffer)
        }
        var header = header
        header.numBuffers = UInt16(truncatingIfNeeded: scratch.chains.count)
        writeFrame(frame, header: header, to: scratch.segments)
        var remaining = needed
        for i in scratch.chains.indices {
            let c = scratch.chains[i]
            let n = min(remaining, c.capacity)
            try queue.addUsed(head: c.head, length: UInt32(truncatingIfNeeded: n))
            remaining -= n
        }
        finishDelivery(queue, bytes: frame.count)
        return true
    }

    /// The usual receive chain: one writable buffer, all of it in one RAM region, that
    /// holds the header and the whole frame (Linux's mergeable buffers are 1.5 KiB and
    /// more, one descriptor each, and so is a small-packet buffer: virtio_net.c
    /// `add_recvbuf_mergeable`, `add_recvbuf_small`; its big-packet chains of pages take
    /// the general path). The frame is copied straight into it, with no list of segments.
    /// Nil for anything else, which takes the general path (and its checks) instead.
    @inline(__always)
    private func wholeFrameBuffer(_ chain: DescriptorChain, needed: UInt64) -> UnsafeMutableRawBufferPointer? {
        guard chain.readable.isEmpty, chain.writable.count == 1, chain.writableLength >= needed, let buffer = chain.writable.first,
              let host = try? context.memory.hostRange(buffer.address, length: UInt64(buffer.length))
        else { return nil }
        return host
    }

    /// Receive chains that cannot take the frame (`BadReceiveBuffer`): their buffers are
    /// returned empty (the driver drops a zero-length buffer and reposts it) and the frame
    /// is counted as lost.
    private func dropWithBadBuffer(_ queue: any Virtqueue, chains: [(head: UInt16, capacity: UInt64)],
                                   _ why: BadReceiveBuffer) throws(VirtqueueError) -> Bool {
        context.guestLog.warning("virtio-net.rx-buffer", "RX chain \(chains.first?.head ?? 0): \(why); frame dropped")
        for c in chains { try queue.addUsed(head: c.head, length: 0) }
        transport.completeUsed(queue)
        counters.dropped(.malformed)
        return true
    }

    /// Header then frame into one buffer (`wholeFrameBuffer`: large enough).
    @inline(__always)
    private func writeFrame(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, to buffer: UnsafeMutableRawBufferPointer) {
        header.write(to: buffer)
        ByteCopy.copy(to: UnsafeMutableRawBufferPointer(rebasing: buffer[VirtioNetHeader.size...]), from: frame)
    }

    /// Copies header then frame across `hostSegments` (already checked to be large enough).
    @inline(__always)
    private func writeFrame(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, to hostSegments: [UnsafeMutableRawBufferPointer]) {
        var position = (segment: 0, offset: 0)
        // Linux's buffers always hold the header whole (virtio_net.c `add_recvbuf_*` put it
        // at the start of the first); a driver may split it, hence the general case.
        if let first = hostSegments.first, first.count >= VirtioNetHeader.size {
            header.write(to: first)
            position.offset = VirtioNetHeader.size
        } else {
            var raw: (UInt64, UInt32) = (0, 0)
            withUnsafeMutableBytes(of: &raw) { header.write(to: UnsafeMutableRawBufferPointer(rebasing: $0[0 ..< VirtioNetHeader.size])) }
            withUnsafeBytes(of: &raw) {
                Self.copy(UnsafeRawBufferPointer(rebasing: $0[0 ..< VirtioNetHeader.size]), to: hostSegments, at: &position)
            }
        }
        Self.copy(frame, to: hostSegments, at: &position)
    }

    /// Copies `source` across `hostSegments` from `position` on, as far as they reach.
    private static func copy(_ source: UnsafeRawBufferPointer, to hostSegments: [UnsafeMutableRawBufferPointer],
                             at position: inout (segment: Int, offset: Int)) {
        var done = 0
        while done < source.count, position.segment < hostSegments.count {
            let dst = hostSegments[position.segment]
            let n = min(dst.count - position.offset, source.count - done)
            if n > 0, let d = dst.baseAddress, let s = source.baseAddress {
                ByteCopy.copy(to: d + position.offset, from: s + done, count: n)
            }
            done += n
            position.offset += n
            if position.offset >= dst.count { position = (position.segment + 1, 0) }
        }
    }

    @inline(__always)
    private func finishDelivery(_ queue: any Virtqueue, bytes: Int) {
        context.cost.frames()
        context.cost.bytes(bytes)
        counters.received(bytes: bytes)
        if !receivingBurst { transport.completeUsed(queue) }
        // While frames flow the device does not need RX kicks (§2.7.10); it asks again
        // when it runs out (`waitForBuffers`).
        queue.disableNotifications()
    }

    /// Not enough buffers: ask the driver to notify when it adds more than those there
    /// now (which were too few: a mergeable frame gives back the chains it could not
    /// fill). If some arrived while re-enabling, the backend retries on the next turn of
    /// the loop; otherwise on the driver's next kick. Never a busy loop.
    private func waitForBuffers(_ queue: any Virtqueue) {
        waitingForReceiveBuffers = true
        if queue.enableNotificationsForMore() { receiveResumption.schedule() }
    }
}
