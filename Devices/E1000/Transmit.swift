import VMMCore
import VMMNet

/// The transmit path (Intel 8254x SDM §3.3–3.5): on a TDT write (or TCTL.EN), walk the
/// ring from TDH to TDT, assemble packets from legacy or context + data descriptors,
/// apply checksum insertion, TCP segmentation and VLAN insertion, hand the frames to
/// the backend (which never blocks), then write DD back for descriptors with RS.
///
/// DD is written only after the packet went out, so a driver polling DD on another vCPU
/// never frees a buffer the device still reads. Headers are copied into a device-owned
/// buffer, because offloads rewrite them and guest memory must not change; the payload
/// goes to the backend from guest memory where nothing rewrites it (TransmitAssembly.swift).
extension E1000Device {
    func transmitPackets() {
        // Descriptor fetches are the function's own memory reads: none without bus
        // mastering (PCI 3.0 §6.2.2; QEMU's DMA fails the same way).
        guard reg(Reg.tctl) & Tctl.enable != 0, context.config.busMasterEnabled else { return }
        let ring: DescriptorRing
        do {
            ring = try DescriptorRing(baseLow: reg(Reg.tdbal), baseHigh: reg(Reg.tdbah), length: reg(Reg.tdlen),
                                      head: reg(Reg.tdh), tail: reg(Reg.tdt), memory: context.memory)
        } catch {
            guestError(.transmitRingInvalid, "transmit ring unusable (\(error)); nothing sent")
            return
        }
        var head = ring.head
        var wroteBack = false
        var allDelayed = true
        let cost = context.cost
        // At most one pass over the ring, and within it the per-action budget: what is
        // left continues from the I/O loop, so one TDT write never buys unbounded work
        // (QEMU's and Firecracker's TX loops yield the same way).
        while head != ring.tail {
            if cost.shouldDefer {
                transmitContinuation.schedule()
                break
            }
            cost.descriptors()
            guard let address = ring.address(head), let (low, high) = ring.load(head, memory: context.memory) else {
                guestError(.descriptorUnreadable, "transmit descriptor \(head) unreadable")
                break
            }
            let done = processDescriptor(at: address, low: low, high: high, ringCount: ring.count)
            if let delayed = done {
                wroteBack = true
                allDelayed = allDelayed && delayed
            }
            head = ring.next(head)
        }
        setReg(Reg.tdh, head)
        if wroteBack { transmitInterruptDue(delayed: allDelayed) }
        // TXQE when the pass ends with the ring empty, also a pass that found it empty, as
        // QEMU's start_xmit sets it (its cause starts as E1000_ICS_TXQE); Linux masks it.
        if head == ring.tail { raise(Cause.txqe) }
    }

    /// Handles one descriptor. Returns nil when no DD was written, else whether every
    /// descriptor written back asked for a delayed interrupt (IDE).
    private func processDescriptor(at address: GuestAddress, low: UInt64, high: UInt64, ringCount: UInt32) -> Bool? {
        let kind = Transmit.kind(high: high)
        let command = Transmit.command(high: high)
        switch kind {
        case .context:
            transmit.context = TransmitContext(low: low, high: high)
        case .invalid:
            guestError(.offloadContextInvalid, "transmit descriptor type \((high >> 20) & 0xF) is reserved; skipped")
        case .legacy, .data:
            if !transmit.inProgress {
                transmit.inProgress = true
                transmit.segmentation = kind == .data && command & Transmit.segmentation != 0
                transmit.options = kind == .data ? Transmit.dataOptions(high: high) : 0
                transmit.firstHigh = high
            }
            append(buffer: low, length: Transmit.length(high: high, kind: kind))
        }
        // A packet that spans the whole ring without EOP can never complete. Every
        // descriptor consumed while it is open counts, context and reserved ones too, or
        // those (with RS) would let pending write-backs grow without bound.
        if transmit.inProgress {
            transmit.descriptorCount = min(transmit.descriptorCount + 1, ringCount)
            if transmit.descriptorCount >= ringCount { transmit.overflowed = true }
        }
        if command & Transmit.reportStatus != 0 {
            transmit.pendingWriteBacks.append(address)
            transmit.pendingDelayed = transmit.pendingDelayed && command & Transmit.interruptDelay != 0
        }
        if kind == .legacy || kind == .data, command & Transmit.endOfPacket != 0 {
            finishPacket(kind: kind, high: high)
        } else if transmit.inProgress, !transmit.overflowed {
            return nil     // DD waits for the rest of the packet
        }
        return writeBackPending()
    }

    private func writeBackPending() -> Bool? {
        guard !transmit.pendingWriteBacks.isEmpty else { return nil }
        // By index: a for-in over the property retained and released the array each time.
        for i in transmit.pendingWriteBacks.indices {
            // Byte 12 is STA in all three layouts; DD is its bit 0.
            if let status = transmit.pendingWriteBacks[i].checkedAdd(12) { try? context.memory.store(Transmit.statusDone, at: status) }
        }
        let delayed = transmit.pendingDelayed
        transmit.pendingWriteBacks.removeAllKeepingStorage()
        transmit.pendingDelayed = true
        return delayed
    }

    private func finishPacket(kind: Transmit.Kind, high: UInt64) {
        defer { transmit.endPacket() }
        guard !transmit.overflowed else {
            let limit = transmit.segmentation ? Transmit.maxPacketLength : Transmit.maxPacketLengthWithoutTSO
            guestError(.transmitPacketTooLarge, "transmit packet larger than \(limit) bytes dropped")
            if transmit.segmentation { statistics.count(E1000Statistics.tsctfc) }
            return
        }
        guard !transmit.unreadable else { return }
        guard transmit.length > 0 else {
            guestError(.transmitPacketEmpty, "transmit packet of 0 bytes dropped")
            return
        }
        let command = Transmit.command(high: high)
        // VLE and the tag come from the EOP descriptor (§3.3.3), with TSE from the first
        // data descriptor (§3.3.7.1), and need CTRL.VME.
        let vlanHigh = transmit.segmentation ? transmit.firstHigh : high
        let tag: UInt16? = Transmit.command(high: vlanHigh) & Transmit.vlanEnable != 0 && reg(Reg.ctrl) & Ctrl.vlanModeEnable != 0
            && vlanTagsRecognized ? Transmit.special(high: vlanHigh) : nil
        if sendWithBackendOffload(kind: kind, high: high, tag: tag) { return }
        if !loopbackActive, goesOutAsIs(kind: kind, command: command) {
            sendPacket(tag: tag)
            return
        }
        guard makeContiguous() else { return }
        let packet = UnsafeMutableRawBufferPointer(rebasing: transmitBuffer.bytes[0 ..< transmit.length])
        if kind == .data, transmit.segmentation {
            segmentAndSend(packet, tag: tag)
            return
        }
        do {
            try insertChecksums(packet, kind: kind, high: high)
        } catch {
            // The hardware would send a wrong checksum; so do we, and count the mistake.
            guestError(.offloadContextInvalid, "checksum insertion impossible: \(error)")
        }
        if transmit.length < Transmit.minimumFrameLength, reg(Reg.tctl) & Tctl.padShortPackets != 0 {
            // TCTL.PSP: short packets are padded on the wire (§13.4.33).
            for i in transmit.length ..< Transmit.minimumFrameLength { transmitBuffer.bytes[i] = 0 }
            transmit.length = Transmit.minimumFrameLength
            transmit.copied = Transmit.minimumFrameLength
        }
        sendPacket(tag: tag)
    }

    /// Nothing to do on the packet's bytes: no checksum to insert, no segmentation, no padding.
    private func goesOutAsIs(kind: Transmit.Kind, command: UInt8) -> Bool {
        guard transmit.length >= Transmit.minimumFrameLength else { return false }
        if kind == .legacy { return command & Transmit.insertChecksum == 0 }
        return !transmit.segmentation && transmit.options & (Transmit.insertIPChecksum | Transmit.insertTransportChecksum) == 0
    }

    /// Legacy IC with CSS/CSO (§3.3.3.1), or the context's IXSM/TXSM fields (§3.3.6).
    private func insertChecksums(_ packet: UnsafeMutableRawBufferPointer, kind: Transmit.Kind, high: UInt64) throws(FrameError) {
        if kind == .legacy {
            // IC and CSO from the EOP descriptor, CSS from the first; "IC is ignored if
            // CSS ≥ length" (§3.3.3.1).
            let start = Transmit.legacyChecksumStart(high: transmit.firstHigh)
            guard Transmit.command(high: high) & Transmit.insertChecksum != 0, start < packet.count else { return }
            try ChecksumOffload.insert(packet, start: start, end: packet.count, field: Transmit.legacyChecksumOffset(high: high))
            return
        }
        // Each insertion on its own: an IP range that does not fit the packet costs the
        // IP checksum only, not the TCP/UDP one (§3.3.6).
        let c = transmit.context
        var failure: FrameError?
        if transmit.options & Transmit.insertIPChecksum != 0 {
            do {
                try ChecksumOffload.insert(packet, start: c.ipStart, end: TransmitContext.end(c.ipEnd, length: packet.count), field: c.ipField)
            } catch { failure = error }
        }
        if transmit.options & Transmit.insertTransportChecksum != 0 {
            do {
                try ChecksumOffload.insert(packet, start: c.transportStart, end: TransmitContext.end(c.transportEnd, length: packet.count),
                                           field: c.transportField)
            } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    /// TSE (§3.5): the context's IPCSS/TUCSS/HDRLEN/MSS describe the headers; each
    /// segment gets fixed-up lengths, IP ID, sequence number, flags and checksums.
    private func segmentAndSend(_ packet: UnsafeMutableRawBufferPointer, tag: UInt16?) {
        let c = transmit.context
        guard c.loaded else {
            guestError(.offloadContextInvalid, "TSE data descriptor without a context descriptor")
            statistics.count(E1000Statistics.tsctfc)
            return
        }
        let layout = SegmentationLayout(network: c.isIPv4 ? .ipv4 : .ipv6, transport: c.isTCP ? .tcp : .udp,
                                        networkOffset: c.ipStart, transportOffset: c.transportStart,
                                        headerLength: c.headerLength, segmentSize: c.segmentSize)
        let room = min(segmentBuffer.bytes.count, max(backend.capabilities.maxFrameSize, HeaderSize.ethernet))
        if loopbackActive, c.segmentSize > 0, c.headerLength < packet.count {
            let segments = (packet.count - c.headerLength + c.segmentSize - 1) / c.segmentSize
            guard segments <= Transmit.loopbackSegmentLimit else {
                // Lost whole, as from an overrun receive FIFO (§13.4.17 RXO, §13.7 MPC),
                // before any segment is built.
                guestError(.loopbackSegmentsLost, "TSO packet of \(segments) segments in loopback: lost")
                statistics.count(E1000Statistics.mpc, by: UInt32(clamping: segments))
                raise(Cause.rxo)
                return
            }
        }
        do {
            try TSOSegmenter.segment(ScatteredFrame(UnsafeRawBufferPointer(packet)), layout: layout, vlanTag: tag,
                                     into: UnsafeMutableRawBufferPointer(rebasing: segmentBuffer.bytes[0 ..< room])) { segment in
                send(segment)
            }
            statistics.count(E1000Statistics.tsctc)
        } catch {
            guestError(.offloadContextInvalid, "TCP segmentation context does not fit the packet: \(error)")
            statistics.count(E1000Statistics.tsctfc)
        }
    }

    /// One contiguous frame (a software segment, or a packet sent whole) to the backend.
    @discardableResult
    func send(_ frame: UnsafeRawBufferPointer) -> Bool {
        sendSegments.append(frame)
        defer { sendSegments.removeAllKeepingStorage() }
        return transmitToBackend(length: frame.count, header: nil, segments: 1)
    }

    /// `sendSegments` (`length` bytes in all; one when looping back, where the packet is
    /// always whole) to the backend, counted as the statistics registers define
    /// (§13.7). With a GSO header it stands for `segments` frames on the wire, each
    /// carrying the headers.
    func transmitToBackend(length: Int, header: VirtioNetHeader?, segments: Int) -> Bool {
        context.cost.frames()
        if loopbackActive {
            if let whole = sendSegments.first { receiveLoopedBack(whole) }
            return true
        }
        guard length <= backend.capabilities.maxFrameSize else {
            guestError(.backendFrameLimit, "\(length)-byte frame exceeds the backend's \(backend.capabilities.maxFrameSize)")
            return false
        }
        // Lent to the backend as a local: passed as `self`'s property, the array was
        // retained and released around every send (see `Array.take`).
        let list = sendSegments.take()
        let result = backend.send(list, header: header)
        // Read from the local: passed as `self`'s property, the array was retained and
        // released around the call, on every frame.
        let destination = result == .sent ? destinationClass(of: list) : nil
        sendSegments = list
        guard result == .sent else { return false }
        let count = UInt32(clamping: segments)
        let segmentHeaderLength = header?.isGSO == true ? Int(header?.headerLength ?? 0) : 0
        let repeatedHeaders = (segments - 1) * segmentHeaderLength
        let wireLength = max(length, Transmit.minimumFrameLength) + Receive.fcsLength
        statistics.count(E1000Statistics.gptc, by: count)
        statistics.count(E1000Statistics.tpt, by: count)
        statistics.countOctets(E1000Statistics.gotcl, wireLength + repeatedHeaders + (segments - 1) * Receive.fcsLength)
        statistics.countOctets(E1000Statistics.totl, wireLength + repeatedHeaders + (segments - 1) * Receive.fcsLength)
        if segments == 1 { statistics.countSize(E1000Statistics.ptc64, length: wireLength) }
        switch destination {
        case .broadcast: statistics.count(E1000Statistics.bptc, by: count)
        case .multicast: statistics.count(E1000Statistics.mptc, by: count)
        default: break
        }
        return true
    }

    /// The class of the frame's destination address, for BPTC and MPTC. Linux puts the
    /// Ethernet header in the first buffer, but a guest may split the address.
    private func destinationClass(of segments: [UnsafeRawBufferPointer]) -> FrameAddressClass? {
        if let first = segments.first, first.count >= 6 { return FrameAddressClass(destinationOf: first) }
        var address: (UInt32, UInt16) = (0, 0)
        return withUnsafeMutableBytes(of: &address) { out in
            let n = ScatterList.gather(segments, into: UnsafeMutableRawBufferPointer(rebasing: out[0 ..< 6]))
            return FrameAddressClass(destinationOf: UnsafeRawBufferPointer(rebasing: out[0 ..< n]))
        }
    }
}
