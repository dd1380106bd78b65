import VMMCore
import VMMNet

/// Constants of the receive path (Intel 8254x SDM §3.2).
enum Receive {
    /// RCTL.LPE allows frames up to 16384 bytes (§13.4.22), FCS included.
    static let maxFrameLength = 16_384
    /// Without LPE: 1518 bytes, or 1522 with an 802.1Q tag (FCS included).
    static let standardFrameLength = 1518
    static let fcsLength = 4
    /// Frames shorter than 60 bytes (64 with FCS) are padded as they would be on the wire.
    static let minimumFrameLength = 60

    // Legacy receive descriptor (§3.2.3): status and error bits.
    static let statusDone: UInt8 = 1 << 0
    static let statusEndOfPacket: UInt8 = 1 << 1
    static let statusIgnoreChecksum: UInt8 = 1 << 2
    static let statusVLAN: UInt8 = 1 << 3
    static let statusTCPChecksum: UInt8 = 1 << 5
    static let statusIPChecksum: UInt8 = 1 << 6
    static let errorTCPChecksum: UInt8 = 1 << 5
    static let errorIPChecksum: UInt8 = 1 << 6
    static let errorData: UInt8 = 1 << 7        // RXE

    /// RCTL.BSIZE with BSEX (§13.4.22), always a power of two; nil for the reserved
    /// encoding (BSEX=1, BSIZE=00).
    static func bufferSize(rctl: UInt32) -> Int? {
        let code = (rctl >> Rctl.bufferSizeShift) & 3
        if rctl & Rctl.bufferSizeExtension != 0 {
            return code == 0 ? nil : 32_768 >> Int(code)      // 16384, 8192, 4096
        }
        return 2048 >> Int(code)                               // 2048, 1024, 512, 256
    }
}

/// What the frames of one delivery are received under, read from the registers once:
/// the device lock is held across the delivery, so no guest write can change them between
/// its frames. Only what receiving itself moves changes: the ring's head, and the frames
/// filled, after the last of which RXDMT0 and the receive timer are looked at once.
struct ReceiveDelivery {
    /// The device's own frames, sent in PHY or MAC loopback: they need no link, and with
    /// no free descriptor one is dropped (RNBC, MPC) rather than held, since nothing would
    /// offer it again.
    let looped: Bool
    let rctl: UInt32
    /// The link is up (or the frames are the device's own) and bus mastering is on.
    let canReceive: Bool
    let tagsRecognized: Bool
    /// CTRL.VME: a recognized tag is stripped into the descriptor's special field.
    let stripTags: Bool
    /// RCTL.BSIZE/BSEX; nil for the reserved encoding.
    let bufferSize: Int?
    /// The ring as the registers describe it, its head past the frames taken so far.
    var ring: Result<DescriptorRing, DescriptorRing.Problem>
    var framesFilled = 0
}

/// What happens to a frame from the backend (§3.2): address and VLAN filtering, VLAN
/// stripping, checksum checks, DMA into the guest's buffers (several descriptors per
/// frame when needed, EOP on the last), write-back, counters and interrupts.
///
/// No descriptors free: the frame stays with the backend (return false) and RNBC
/// counts it; the backend offers it again once the driver advances RDT. This plays the
/// part of the 82540's 48 KiB receive FIFO, so a busy guest does not lose frames the
/// way a dropping model would. A frame that could never fit the ring, or a ring the
/// guest broke, costs that frame (MPC, RXO).
extension E1000Device {
    /// The registers a delivery is received under.
    func receiveDelivery(looped: Bool) -> ReceiveDelivery {
        let rctl = reg(Reg.rctl)
        return ReceiveDelivery(
            looped: looped,
            rctl: rctl,
            // A down link never sees the frame, and without bus mastering it cannot be
            // written to memory (QEMU's e1000x_rx_ready agrees). The link as last reported
            // (STATUS.LU, LSC): every change of the backend's or the PHY's updates it under
            // this lock (`linkMayHaveChanged`), and it costs no call through the backend.
            canReceive: (looped || reportedLinkUp) && context.config.busMasterEnabled,
            tagsRecognized: vlanTagsRecognized,
            stripTags: reg(Reg.ctrl) & Ctrl.vlanModeEnable != 0,
            bufferSize: Receive.bufferSize(rctl: rctl),
            ring: Result { () throws(DescriptorRing.Problem) in
                try DescriptorRing(baseLow: reg(Reg.rdbal), baseHigh: reg(Reg.rdbah), length: reg(Reg.rdlen),
                                   head: reg(Reg.rdh), tail: reg(Reg.rdt), memory: context.memory)
            })
    }

    /// After a delivery's last frame (§13.4.22 RDMTS): RXDMT0 when the free descriptors
    /// are at or below 1/2, 1/4 or 1/8 of the ring; then the receive timer (RDTR/RADV).
    /// The free count only falls during a delivery, so a threshold crossed by any frame
    /// is still crossed after the last; all its frames arrived at the same instant.
    func finishReceiving(_ delivery: ReceiveDelivery) {
        guard delivery.framesFilled > 0, case let .success(ring) = delivery.ring else { return }
        let shift = ((delivery.rctl >> Rctl.minThresholdShift) & 3) + 1
        if ring.available <= ring.count >> shift { raise(Cause.rxdmt0) }
        receiveInterruptDue()
    }

    /// A frame this device sent in loopback, received as if from the wire: a delivery of one.
    func receiveLoopedBack(_ frame: UnsafeRawBufferPointer) {
        var delivery = receiveDelivery(looped: true)
        _ = receiveFrame(frame, in: &delivery)
        finishReceiving(delivery)
    }

    /// One frame of `delivery`. Returns false when the backend keeps it (no room yet, or
    /// the receiver is off); a looped frame is never kept.
    func receiveFrame(_ frame: UnsafeRawBufferPointer, in delivery: inout ReceiveDelivery) -> Bool {
        let rctl = delivery.rctl
        // A stopped receiver takes nothing (§3.2.1): the backend holds the frame and stops
        // reading until RCTL is written, as QEMU's e1000_can_receive is false without
        // RCTL.EN. A guest with its receiver off (Linux's e1000_down) then costs no work per
        // frame on the wire; dropping them would wake the I/O loop for each one.
        guard rctl & Rctl.enable != 0 else {
            if delivery.looped { return true }
            receiveStalled = true
            return false
        }
        guard delivery.canReceive else { return true }
        guard frame.count >= HeaderSize.ethernet else {
            statistics.count(E1000Statistics.ruc)
            return true
        }
        let tci = delivery.tagsRecognized ? VLAN.tag(of: frame) : nil
        let limit = rctl & Rctl.longPacket != 0 ? Receive.maxFrameLength
            : Receive.standardFrameLength + (tci == nil ? 0 : HeaderSize.vlanTag)
        let wireLength = max(frame.count, Receive.minimumFrameLength) + Receive.fcsLength
        // TPR/TOR count every frame seen, filtered or not — but a frame handed back to the
        // backend is seen again later, so it counts then.
        var heldByBackend = false
        defer {
            if !heldByBackend {
                statistics.count(E1000Statistics.tpr)
                statistics.countOctets(E1000Statistics.torl, wireLength)
            }
        }
        guard wireLength <= limit else {
            statistics.count(E1000Statistics.roc)
            return true
        }
        guard let addressClass = filter.accept(frame, rctl: rctl) else { return true }
        if let tci, rctl & Rctl.vlanFilter != 0, !filter.vlanAccepted(tci: tci) { return true }

        let ring: DescriptorRing
        switch delivery.ring {
        case let .success(r): ring = r
        case let .failure(problem):
            guestError(.receiveRingInvalid, "receive ring unusable (\(problem)); frame dropped")
            return missed()
        }
        guard let bufferSize = delivery.bufferSize else {
            guestError(.receiveRingInvalid, "RCTL buffer size uses the reserved encoding; frame dropped")
            return missed()
        }

        // The bytes the guest gets: tag stripped with CTRL.VME, padded, FCS unless SECRC.
        // Their number decides whether the ring has room before any work is done.
        let strip = tci != nil && delivery.stripTags
        let keepFCS = rctl & Rctl.stripCRC == 0
        let unpadded = frame.count - (strip ? HeaderSize.vlanTag : 0)
        let length = max(unpadded, Receive.minimumFrameLength) + (keepFCS ? Receive.fcsLength : 0)
        // BSIZE is a power of two (`Receive.bufferSize`): a shift, not the divide that
        // held 14 % of this function's samples on a 64-byte receive.
        let needed = (length + bufferSize - 1) >> bufferSize.trailingZeroBitCount
        guard needed < Int(ring.count) else {
            guestError(.receiveFrameLargerThanRing, "a \(length)-byte frame needs \(needed) buffers of \(bufferSize); the ring has \(ring.count)")
            return missed()
        }
        guard needed <= Int(ring.available) else {
            statistics.count(E1000Statistics.rnbc)
            if delivery.looped { return missed() }
            receiveStalled = true
            heldByBackend = true
            return false
        }

        context.cost.frames()
        context.cost.bytes(length)
        // The `length` bytes the guest gets, and their checksum status (RXCSUM).
        let bytes: UnsafeRawBufferPointer
        var staged: ChecksumStatus?
        if !strip, !keepFCS, frame.count >= Receive.minimumFrameLength {
            // The usual case (Linux's e1000 sets SECRC and strips no tags itself, frames
            // need no padding): the frame goes to the guest as it is, with no staging copy.
            bytes = frame
        } else {
            let out = receiveBuffer.bytes
            var filled = 0
            if strip, let parts = VLAN.strip(frame) {
                copy(parts.addresses, to: out, at: &filled)
                copy(parts.rest, to: out, at: &filled)
            } else {
                copy(frame, to: out, at: &filled)
            }
            for i in filled ..< max(filled, Receive.minimumFrameLength) { out[i] = 0 }
            let packetLength = max(filled, Receive.minimumFrameLength)
            let packet = UnsafeRawBufferPointer(rebasing: out[0 ..< packetLength])
            staged = checksumStatus(packet)
            if keepFCS {
                let fcs = EthernetFCS.compute(packet)
                for i in 0 ..< Receive.fcsLength { out[packetLength + i] = UInt8(truncatingIfNeeded: fcs >> UInt32(8 * i)) }
            }
            bytes = UnsafeRawBufferPointer(rebasing: out[0 ..< length])
        }

        // A frame one buffer holds (a standard frame in Linux's 2 KiB buffers) is copied in
        // while its checksum is verified: one pass over its bytes, not a sum and a copy.
        let status: ChecksumStatus
        var filledFirst = false
        if let staged {
            status = staged
        } else if needed == 1, let address = ring.load(ring.head, memory: context.memory)?.low,
                  let host = context.memory.hostRangeIfRAM(GuestAddress(address), length: UInt64(length)),
                  let destination = host.baseAddress {
            status = checksumStatus(bytes, copyingTo: destination)
            filledFirst = true
        } else {
            status = checksumStatus(bytes)
        }

        var index = ring.head
        var offset = 0
        var fragments = 0
        while offset < length {
            let chunk = min(bufferSize, length - offset)
            let last = offset + chunk == length
            var written = UInt16(chunk)
            var errors: UInt8 = 0
            if !(filledFirst && fragments == 0) {
                guard let bufferAddress = ring.load(index, memory: context.memory)?.low else {
                    guestError(.descriptorUnreadable, "receive descriptor \(index) unreadable")
                    break
                }
                do {
                    try context.memory.write(UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + chunk]), at: GuestAddress(bufferAddress))
                } catch {
                    guestError(.receiveBufferNotRAM, "receive buffer 0x\(String(bufferAddress, radix: 16)): \(error); frame truncated with RXE")
                    written = 0
                    errors = Receive.errorData
                }
            }
            let stop = last || errors != 0
            var statusBits = Receive.statusDone
            var special: UInt16 = 0
            var checksum: UInt16 = 0
            if stop {
                statusBits |= Receive.statusEndOfPacket | status.bits
                errors |= status.errors
                checksum = status.packetChecksum
                if strip, let tci {
                    statusBits |= Receive.statusVLAN
                    special = tci
                }
            }
            // Bytes 8…15: length, checksum, status, errors, special — one store, status last in memory order.
            let writeBack = UInt64(written) | UInt64(checksum) << 16 | UInt64(statusBits) << 32
                | UInt64(errors) << 40 | UInt64(special) << 48
            ring.storeHigh(writeBack, at: index, memory: context.memory)
            index = ring.next(index)
            offset += chunk
            fragments += 1
            if stop { break }
        }
        setReg(Reg.rdh, index)
        delivery.ring = .success(ring.advanced(to: index))
        delivery.framesFilled += 1

        statistics.count(E1000Statistics.gprc)
        statistics.countOctets(E1000Statistics.gorcl, wireLength)
        statistics.countSize(E1000Statistics.prc64, length: wireLength)
        switch addressClass {
        case .broadcast: statistics.count(E1000Statistics.bprc)
        case .multicast: statistics.count(E1000Statistics.mprc)
        case .unicast: break
        }
        return true
    }

    /// A frame lost inside the device: counted as missed, RXO raised (§13.4.17).
    private func missed() -> Bool {
        statistics.count(E1000Statistics.mpc)
        raise(Cause.rxo)
        return true
    }

    private func copy(_ source: UnsafeRawBufferPointer, to out: UnsafeMutableRawBufferPointer, at length: inout Int) {
        guard let src = source.baseAddress, let dst = out.baseAddress, source.count <= out.count - length else { return }
        ByteCopy.copy(to: dst + length, from: src, count: source.count)
        length += source.count
    }

    /// A received frame's descriptor status, errors and packet checksum (RXCSUM).
    typealias ChecksumStatus = (bits: UInt8, errors: UInt8, packetChecksum: UInt16)

    /// RXCSUM (§13.4.24, §3.2.9): IPv4 header and TCP/UDP checks as enabled, and the
    /// packet checksum from PCSS to the end of the frame for the descriptor. With a
    /// `destination` (as large as the packet) the packet is copied there on the way.
    private func checksumStatus(_ packet: UnsafeRawBufferPointer, copyingTo destination: UnsafeMutableRawPointer? = nil) -> ChecksumStatus {
        let rxcsum = reg(Reg.rxcsum)
        let verdicts: ChecksumOffload.Verdicts
        if rxcsum & (RxCsum.ipOffload | RxCsum.tcpUDPOffload) != 0 {
            verdicts = destination.map { ChecksumOffload.verify(packet, copyingTo: $0) } ?? ChecksumOffload.verify(packet)
        } else {
            verdicts = ChecksumOffload.Verdicts()
        }
        var bits: UInt8 = 0, errors: UInt8 = 0
        if rxcsum & RxCsum.ipOffload != 0, verdicts.ipv4Header != .notChecked {
            bits |= Receive.statusIPChecksum
            if verdicts.ipv4Header == .bad { errors |= Receive.errorIPChecksum }
        }
        if rxcsum & RxCsum.tcpUDPOffload != 0, verdicts.transport != .notChecked {
            bits |= Receive.statusTCPChecksum
            if verdicts.transport == .bad { errors |= Receive.errorTCPChecksum }
        }
        if bits == 0 { bits = Receive.statusIgnoreChecksum }
        let start = Int(rxcsum & RxCsum.startMask)
        // No segment was summed, so nothing was copied yet: the packet sum is taken as the
        // bytes are copied instead.
        if let destination, verdicts.transportSegment == nil {
            return (bits, errors, copyingPacketChecksum(packet, from: start, to: destination))
        }
        return (bits, errors, packetChecksum(packet, from: start, verdicts.transportSegment))
    }

    /// `packetChecksum` with no segment sum to reuse, while copying the packet to
    /// `destination`: the bytes before PCSS plainly, the rest summed as they are copied.
    @inline(__always)
    private func copyingPacketChecksum(_ packet: UnsafeRawBufferPointer, from start: Int, to destination: UnsafeMutableRawPointer) -> UInt16 {
        let start = min(start, packet.count)
        if let source = packet.baseAddress { ByteCopy.copy(to: destination, from: source, count: start) }
        var sum = InternetChecksum()
        sum.add(copying: UnsafeRawBufferPointer(rebasing: packet[start...]), to: destination + start)
        return sum.folded
    }

    /// The sum from PCSS to the end of the packet. Linux leaves PCSS at its reset value, 0
    /// (e1000_configure_rx only sets TUOFL), so the TCP/UDP segment just verified lies
    /// inside it: its sum is reused, and the payload is read once, not twice.
    private func packetChecksum(_ packet: UnsafeRawBufferPointer, from start: Int,
                                _ segment: ChecksumOffload.Verdicts.SummedRange?) -> UInt16 {
        var sum = InternetChecksum()
        guard start < packet.count else { return sum.folded }
        if let segment, start <= segment.range.lowerBound, segment.range.upperBound <= packet.count {
            sum.add(UnsafeRawBufferPointer(rebasing: packet[start ..< segment.range.lowerBound]))
            sum.add(segment.sum)
            sum.add(UnsafeRawBufferPointer(rebasing: packet[segment.range.upperBound...]))
        } else {
            sum.add(UnsafeRawBufferPointer(rebasing: packet[start...]))
        }
        return sum.folded
    }

    /// RDT moved: a frame the backend holds for us may fit now.
    func receiveDescriptorsAdded() {
        guard receiveStalled else { return }
        receiveStalled = false
        backend.resumeReceive()
    }
}
