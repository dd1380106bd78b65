import VMMCore
import VMMNet

/// Assembling a packet from its data buffers without copying it. The hardware reads
/// buffers by DMA as it transmits (SDM §3.3); here each buffer is noted as a piece of
/// guest memory as its descriptor comes, and a packet that goes out as it is, or with a
/// checksum request for the backend to finish, leaves from there: its bytes are read
/// once, by the backend. A path that reads or rewrites headers (TSO, IXSM, a VLAN tag)
/// first copies the first `Transmit.headLength` bytes into the device's buffer
/// (`copyHead`), so every header the device checks or changes is its own copy; one that
/// needs work on all of it (software checksums or segmentation, loopback, padding) is
/// copied whole first (`makeContiguous`).
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
        let address = GuestAddress(buffer)
        guard address.checkedAdd(UInt64(length - 1)) != nil else {
            // A buffer running past 2^64 is never all RAM. The packet is dropped at EOP
            // (`unreadable`), unsent.
            unreadableBuffer(address, length: length, reason: "it wraps past 2^64")
            return finishAppend(length)
        }
        let piece = TransmitPiece(address: address, length: length)
        if !transmit.pieces.append(piece) {
            makeContiguous()
            _ = transmit.pieces.append(piece)   // into the emptied list: always taken
        }
        finishAppend(length)
    }

    private func finishAppend(_ length: Int) { transmit.length += length }

    /// Copies what is left in pieces: the packet is then whole in the transmit buffer's
    /// first `transmit.length` bytes. False when a piece was not RAM (reported once; the
    /// packet is dropped).
    @discardableResult
    func makeContiguous() -> Bool {
        for i in 0 ..< transmit.pieces.count {
            let piece = transmit.pieces[i]
            copyIntoBuffer(from: piece.address, length: piece.length)
        }
        transmit.pieces.removeAll()
        return !transmit.unreadable
    }

    /// Copies the packet's first `Transmit.headLength` bytes (all of a shorter one) into
    /// the transmit buffer, for a path that reads or rewrites headers. False when a piece
    /// was not RAM (reported once; the packet is dropped).
    func copyHead() -> Bool {
        while transmit.copied < Transmit.headLength, let piece = transmit.pieces.first {
            let n = min(piece.length, Transmit.headLength - transmit.copied)
            copyIntoBuffer(from: piece.address, length: n)
            transmit.pieces.dropFront(bytes: n)
        }
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

    /// Sends the assembled packet: its copied head, if any, with `tag` inserted into it
    /// (copied for that), then the pieces straight from guest memory. With a GSO `header`
    /// it stands for `segments` frames on the wire. A piece not within one RAM region
    /// (across two regions, or not RAM) makes the packet copied whole first, which also
    /// reports it.
    @discardableResult
    func sendPacket(tag: UInt16?, header: VirtioNetHeader? = nil, segments: Int = 1) -> Bool {
        defer { sendSegments.removeAllKeepingStorage() }
        if tag != nil, !copyHead() { return false }
        for i in 0 ..< transmit.pieces.count {
            let piece = transmit.pieces[i]
            guard let view = try? context.memory.hostRange(piece.address, length: UInt64(piece.length)) else {
                sendSegments.removeAllKeepingStorage()
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
        if headLength > 0 {
            // In front of at most `Transmit.maxPieces` views; only the paths that copied a head get here.
            sendSegments.insert(UnsafeRawBufferPointer(rebasing: transmitBuffer.bytes[0 ..< headLength]), at: 0)
        }
        return transmitToBackend(length: transmit.length - transmit.copied + headLength, header: header, segments: segments)
    }
}
