import VMMCore
import VMMNet

/// Assembling a packet from its data buffers without copying all of it. The hardware
/// reads buffers by DMA as it transmits (SDM §3.3); here the first `Transmit.headLength`
/// bytes, where every offload rewrites headers, are copied into the device's buffer as the
/// descriptors come, and the rest stays in guest memory as pieces. A packet that goes out
/// as it is, or with a header for the backend to finish, leaves from there: its payload is
/// read once, by the kernel. One that needs work on all of it (software checksums or
/// segmentation, loopback) is copied whole first (`makeContiguous`).
///
/// Guest memory changes only under the device lock (`GuestMemory`), which every step
/// below holds, and the backend is done with the views when `send` returns.
extension E1000Device {
    /// Adds one data buffer to the packet (at most `Transmit.maxPacketLength` in all with
    /// TSO, `Transmit.maxPacketLengthWithoutTSO` without).
    func append(buffer: UInt64, length: Int) {
        guard length > 0, !transmit.overflowed else { return }
        let limit = transmit.segmentation ? Transmit.maxPacketLength : Transmit.maxPacketLengthWithoutTSO
        guard length <= limit - transmit.length else {
            transmit.overflowed = true
            return
        }
        context.cost.bytes(length)
        var address = GuestAddress(buffer)
        var remaining = length
        if transmit.pieces.isEmpty, transmit.copied < Transmit.headLength {
            let headPart = min(remaining, Transmit.headLength - transmit.copied)
            copyIntoBuffer(from: address, length: headPart)
            remaining -= headPart
            guard remaining > 0 else { return finishAppend(length) }
            guard let rest = address.checkedAdd(UInt64(headPart)) else {
                // A buffer running past 2^64 is never all RAM. Its bytes are in neither the
                // head nor a piece; the packet is dropped at EOP (`unreadable`), unsent.
                unreadableBuffer(address, length: length, reason: "it wraps past 2^64")
                return finishAppend(length)
            }
            address = rest
        }
        let piece = TransmitPiece(address: address, length: remaining)
        if !transmit.pieces.append(piece) {
            makeContiguous()
            _ = transmit.pieces.append(piece)   // into the emptied list: always taken
        }
        finishAppend(length)
    }

    private func finishAppend(_ length: Int) { transmit.length += length }

    /// Copies the pieces after the head: the packet is then whole in the transmit buffer's
    /// first `transmit.length` bytes. False when a piece was not RAM (reported once; the
    /// packet is dropped at EOP).
    @discardableResult
    func makeContiguous() -> Bool {
        for i in 0 ..< transmit.pieces.count {
            let piece = transmit.pieces[i]
            copyIntoBuffer(from: piece.address, length: piece.length)
        }
        transmit.pieces.removeAll()
        return !transmit.unreadable
    }

    private func copyIntoBuffer(from address: GuestAddress, length: Int) {
        // copied + length <= transmit.length + length <= Transmit.maxPacketLength: checked in `append`.
        let destination = UnsafeMutableRawBufferPointer(rebasing: transmitBuffer.bytes[transmit.copied ..< transmit.copied + length])
        transmit.copied += length
        guard !transmit.unreadable else { return }
        do {
            try context.memory.read(into: destination, from: address)
        } catch {
            unreadableBuffer(address, length: length, reason: "\(error)")
        }
    }

    private func unreadableBuffer(_ address: GuestAddress, length: Int, reason: String) {
        if !transmit.unreadable {
            guestError(.transmitBufferNotRAM, "transmit buffer 0x\(String(address.raw, radix: 16))+\(length): \(reason); packet dropped")
        }
        transmit.unreadable = true
    }

    /// Sends the assembled packet: the head from the device's buffer, `tag` inserted into
    /// it, then the pieces straight from guest memory. With a GSO `header` it stands for
    /// `segments` frames on the wire. A piece not within one RAM region (across two
    /// regions, or not RAM) makes the packet copied whole first, which also reports it.
    @discardableResult
    func sendPacket(tag: UInt16?, header: VirtioNetHeader? = nil, segments: Int = 1) -> Bool {
        defer { clearSendSegments() }
        for i in 0 ..< transmit.pieces.count {
            let piece = transmit.pieces[i]
            guard let view = try? context.memory.hostRange(piece.address, length: UInt64(piece.length)) else {
                clearSendSegments()
                guard makeContiguous() else { return false }
                break
            }
            sendSegments.append(UnsafeRawBufferPointer(view))
        }
        var headLength = transmit.copied
        var header = header
        if let tag {
            guard let tagged = VLAN.insert(tci: tag, inPlace: transmitBuffer.bytes, length: headLength) else {
                guestError(.transmitVLANInsertionImpossible, "VLAN insertion into a \(transmit.length)-byte packet impossible")
                return false
            }
            headLength = tagged
            header?.checksumStart &+= UInt16(HeaderSize.vlanTag)
            if header?.isGSO == true { header?.headerLength &+= UInt16(HeaderSize.vlanTag) }
        }
        sendSegments[0] = UnsafeRawBufferPointer(rebasing: transmitBuffer.bytes[0 ..< headLength])
        return transmitToBackend(length: transmit.length - transmit.copied + headLength, header: header, segments: segments)
    }

    /// Back to the one empty segment that `send` and `sendPacket` fill.
    private func clearSendSegments() {
        while sendSegments.count > 1 { sendSegments.removeLast() }
        sendSegments[0] = UnsafeRawBufferPointer(start: nil, count: 0)
    }
}
