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

    /// Frames from the backend (on the I/O loop), all under one hold of the lock: each is
    /// added to its queue's used ring as it comes, and a queue's ring is published when
    /// the run of frames steered to it ends (with one queue pair, when the delivery
    /// ends), with one fence and at most one interrupt per run, as vhost-net's
    /// `vhost_add_used_and_signal_n` does. Stops at the first frame the guest has no room
    /// for, or once the delivery reached its budget: the backend keeps that frame and those
    /// after it, and offers them again after `resumeReceive()` (the guest's RX kick, or the
    /// next turn of the loop after a budget stop).
    public func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        context.lock.withLock {
            context.cost.measure {
                // Without bus mastering, or before DRIVER_OK, the frames are lost, as on a
                // NIC with no receiver set up.
                guard transport.isLive else {
                    counters.dropped(.linkDown, count: frames.count)
                    return frames.count
                }
                // Deliveries do not nest (the device lock); a fresh scratch would only allocate.
                var run = ReceiveRun(next: 0, scratch: receiveScratch.take() ?? ReceiveScratch())
                defer {
                    receiveScratch = run.scratch.take()
                    counters.received(receivedTally)
                    receivedTally = BackendCounters.Tally()
                }
                let mergeable = transport.negotiated(VirtioNetFeature.mergeableRXBuffers)
                while run.next < frames.count {
                    // The delivery is one action (issue 12): past its budget (a guest's
                    // runaway chains walked frame after frame) the rest waits with the
                    // backend, which is asked for it again from the loop.
                    if run.next > 0, context.cost.shouldDefer {
                        waitingForReceiveBuffers = true
                        receiveResumption.schedule()
                        break
                    }
                    // A run of frames steered to the same queue goes through one lookup of
                    // it, and its used entries are published when it ends.
                    let steered = receiveQueueIndex(for: frames[run.next].bytes)
                    func deliver(_ queue: any Virtqueue, _ run: inout ReceiveRun) -> Bool {
                        // Linux drives a split ring unless VIRTIO_F_RING_PACKED was
                        // negotiated: the run specialized for it calls the ring directly,
                        // not through the protocol's witness table (as transmit does).
                        let delivered = if let split = queue as? SplitVirtqueue {
                            deliverRun(frames, steeredTo: steered, on: split, mergeable: mergeable, &run)
                        } else {
                            deliverRun(frames, steeredTo: steered, on: queue, mergeable: mergeable, &run)
                        }
                        if queue.pendingUsed > 0 { transport.completeUsed(queue) }
                        return delivered
                    }
                    var outcome = transport.withQueue(steered, &run, deliver)
                    if outcome == nil, steered != 0 { outcome = transport.withQueue(0, &run, deliver) }
                    guard let delivered = outcome else {
                        counters.dropped(.linkDown)   // no receive queue enabled
                        run.next += 1
                        continue
                    }
                    if !delivered { break }
                }
                return run.next
            }
        }
    }

    /// Where a delivery is: the next frame, and the scratch its frames fill.
    struct ReceiveRun {
        var next: Int
        var scratch: ReceiveScratch
    }

    /// Delivers `frames[run.next...]` on `queue` while they are steered to `steered`,
    /// moving `run.next` past each one taken (or dropped). False: the guest has no room
    /// for `frames[run.next]`.
    private func deliverRun<Queue: Virtqueue>(_ frames: UnsafeBufferPointer<ReceivedFrame>, steeredTo steered: Int,
                                              on queue: Queue, mergeable: Bool, _ run: inout ReceiveRun) -> Bool {
        let first = run.next
        var notificationsOff = false
        while run.next < frames.count, run.next == first || receiveQueueIndex(for: frames[run.next].bytes) == steered,
              run.next == first || !context.cost.shouldDefer {
            let delivered = receivedTally.frames
            guard receive(frames[run.next], on: queue, mergeable: mergeable, &run.scratch) else { return false }
            run.next += 1
            // While frames flow the device does not need RX kicks (§2.7.10); it asks again
            // when it runs out (`waitForBuffers`). Only once a frame took a buffer: a run of
            // dropped frames must not switch off the kick a device waiting for buffers needs.
            if !notificationsOff, receivedTally.frames != delivered {
                queue.disableNotifications()
                notificationsOff = true
            }
        }
        return true
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

        /// This scratch with its storage, leaving one without storage in its place: moved
        /// back into the device at a delivery's end without retaining its four arrays.
        mutating func take() -> ReceiveScratch {
            ReceiveScratch(chain: chain.take(), segments: segments.take(), chains: chains.take())
        }
    }

    /// Delivers `frame` on `queue`. False: no buffers; the frame is kept by the backend.
    @inline(__always)
    private func receive<Queue: Virtqueue>(_ received: ReceivedFrame, on queue: Queue, mergeable: Bool, _ scratch: inout ReceiveScratch) -> Bool {
        let frame = received.bytes, header = received.header
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
        do {
            // The usual chain first, here in the delivery loop: the general paths' frames
            // (their scratch arrays, spills and stack guard) cost as much as this copy's setup.
            var delivered = try deliverWhole(payload, header: outHeader, queue: queue)
            if !delivered {
                delivered = mergeable
                    ? try deliverMergeable(payload, header: outHeader, queue: queue, &scratch)
                    : try deliverSingle(payload, header: outHeader, queue: queue, &scratch)
            }
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
        // Tested first: most frames are not GSO, and then nothing else here applies.
        if h.gsoType != 0 {
            guard h.isGSO else {
                counters.dropped(.malformed)
                return nil
            }
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
    /// (§5.1.6.3.1). A frame too large for the chain is dropped and the chain kept. Called
    /// when `deliverWhole` did not take the frame.
    private func deliverSingle<Queue: Virtqueue>(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, queue: Queue,
                               _ scratch: inout ReceiveScratch) throws(VirtqueueError) -> Bool {
        let needed = UInt64(VirtioNetHeader.size) + UInt64(frame.count)
        scratch.segments.removeAllKeepingStorage()
        guard let taken = try takeReceiveChain(queue, &scratch) else { return false }
        guard taken.capacity >= needed else {
            queue.unpop(1)
            context.guestLog.debug("virtio-net.rx-too-big", "\(frame.count)-byte frame does not fit a \(taken.capacity)-byte buffer")
            counters.dropped(.oversized)
            return true
        }
        if let error = taken.error {
            scratch.chains.removeAllKeepingStorage()
            scratch.chains.append((taken.head, 0))
            return try dropWithBadBuffer(queue, chains: scratch.chains, .notRAM(error))
        }
        writeFrame(frame, header: header, to: scratch.segments)
        try queue.addUsed(head: taken.head, length: UInt32(truncatingIfNeeded: needed))
        finishDelivery(bytes: frame.count)
        return true
    }

    /// With MRG_RXBUF a frame spreads over as many chains as it needs; `num_buffers` in
    /// the first says how many (§5.1.6.4). Either all fit or nothing is taken. Called when
    /// `deliverWhole` did not take the frame.
    private func deliverMergeable<Queue: Virtqueue>(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, queue: Queue,
                                  _ scratch: inout ReceiveScratch) throws(VirtqueueError) -> Bool {
        let needed = UInt64(VirtioNetHeader.size) + UInt64(frame.count)
        scratch.chains.removeAllKeepingStorage()
        scratch.segments.removeAllKeepingStorage()
        var capacity: UInt64 = 0
        var descriptors = 0
        var badBuffer: BadReceiveBuffer?
        while true {
            guard let taken = try takeReceiveChain(queue, &scratch) else {
                queue.unpop(UInt16(truncatingIfNeeded: scratch.chains.count))
                return false
            }
            descriptors += taken.descriptors
            if let error = taken.error { badBuffer = badBuffer ?? .notRAM(error) }
            scratch.chains.append((taken.head, taken.capacity))
            capacity &+= taken.capacity
            // The header must sit in the first buffer, where the driver looks for it.
            if scratch.chains.count == 1 && taken.capacity < UInt64(VirtioNetHeader.size) {
                badBuffer = badBuffer ?? .headerDoesNotFit(length: taken.capacity)
            }
            if descriptors > Self.maximumReceiveDescriptors {
                badBuffer = badBuffer ?? .tooManyDescriptors
            }
            if badBuffer != nil || capacity >= needed { break }
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
        finishDelivery(bytes: frame.count)
        return true
    }

    /// The usual receive chain: one writable buffer, all of it in one RAM region, that
    /// holds the header and the whole frame (Linux's mergeable buffers are 1.5 KiB and
    /// more, one descriptor each, and so is a small-packet buffer: virtio_net.c
    /// `add_recvbuf_mergeable`, `add_recvbuf_small`). The frame is copied straight into
    /// it, with no list of segments or chains (`num_buffers` is 1 either way). False, and
    /// nothing taken, for anything else: the general path then takes it, with its checks.
    @inline(__always)
    private func deliverWhole<Queue: Virtqueue>(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader,
                                                queue: Queue) throws(VirtqueueError) -> Bool {
        let needed = UInt64(VirtioNetHeader.size) + UInt64(frame.count)
        guard let (head, buffer) = try queue.popWritableBuffer() else { return false }
        guard UInt64(buffer.length) >= needed, let host = context.memory.hostRangeIfRAM(buffer.address, length: UInt64(buffer.length)) else {
            queue.unpop(1)
            return false
        }
        context.cost.descriptors(1)
        header.write(to: host)
        ByteCopy.copy(to: UnsafeMutableRawBufferPointer(rebasing: host[VirtioNetHeader.size...]), from: frame)
        try queue.addUsed(head: head, length: UInt32(truncatingIfNeeded: needed))
        finishDelivery(bytes: frame.count)
        return true
    }

    /// Takes the next receive chain and appends host views of its writable buffers to
    /// `scratch.segments`: its head, writable bytes, descriptors walked (charged to the
    /// action) and, when a buffer is not RAM, why (its views are then left out). Nil
    /// when the ring has none. Linux's chains (one writable buffer each,
    /// `Virtqueue.popWritableBuffer`) skip the walk into `scratch.chain`.
    @inline(__always)
    private func takeReceiveChain<Queue: Virtqueue>(_ queue: Queue, _ scratch: inout ReceiveScratch) throws(VirtqueueError)
        -> (head: UInt16, capacity: UInt64, descriptors: Int, error: GuestMemoryError?)? {
        if let (head, buffer) = try queue.popWritableBuffer() {
            context.cost.descriptors(1)
            // Almost always inside one RAM region: its view without the general resolve.
            if let host = context.memory.hostRangeIfRAM(buffer.address, length: UInt64(buffer.length)) {
                scratch.segments.append(host)
                return (head, UInt64(buffer.length), 1, nil)
            }
            do {
                try context.memory.resolve(CollectionOfOne(buffer), into: &scratch.segments)
            } catch {
                return (head, UInt64(buffer.length), 1, error)
            }
            return (head, UInt64(buffer.length), 1, nil)
        }
        guard try queue.pop(into: &scratch.chain) else { return nil }
        let walked = scratch.chain.descriptorCount
        context.cost.descriptors(walked)
        do {
            try context.memory.resolve(scratch.chain.writable, into: &scratch.segments)
        } catch {
            return (scratch.chain.head, scratch.chain.writableLength, walked, error)
        }
        return (scratch.chain.head, scratch.chain.writableLength, walked, nil)
    }

    /// Receive chains that cannot take the frame (`BadReceiveBuffer`): their buffers are
    /// returned empty (the driver drops a zero-length buffer and reposts it) and the frame
    /// is counted as lost.
    private func dropWithBadBuffer<Queue: Virtqueue>(_ queue: Queue, chains: [(head: UInt16, capacity: UInt64)],
                                   _ why: BadReceiveBuffer) throws(VirtqueueError) -> Bool {
        context.guestLog.warning("virtio-net.rx-buffer", "RX chain \(chains.first?.head ?? 0): \(why); frame dropped")
        for c in chains { try queue.addUsed(head: c.head, length: 0) }
        transport.completeUsed(queue)
        counters.dropped(.malformed)
        return true
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
    private func finishDelivery(bytes: Int) {
        context.cost.frames()
        context.cost.bytes(bytes)
        receivedTally.add(bytes: bytes)
    }

    /// Not enough buffers: ask the driver to notify when it adds more than those there
    /// now (which were too few: a mergeable frame gives back the chains it could not
    /// fill). If some arrived while re-enabling, the backend retries on the next turn of
    /// the loop; otherwise on the driver's next kick. Never a busy loop.
    private func waitForBuffers<Queue: Virtqueue>(_ queue: Queue) {
        waitingForReceiveBuffers = true
        if queue.enableNotificationsForMore() { receiveResumption.schedule() }
    }
}
