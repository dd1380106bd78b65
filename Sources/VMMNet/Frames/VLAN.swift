/// IEEE 802.1Q tags: a 4-byte TPID (0x8100) + TCI (PCP 3 bits, DEI 1, VID 12) placed
/// right after the source MAC address (IEEE 802.1Q §9.3).
public enum VLAN {
    /// The VLAN identifier (low 12 bits of a TCI).
    public static func vid(_ tci: UInt16) -> UInt16 { tci & 0x0FFF }
    /// The priority code point (top 3 bits of a TCI).
    public static func priority(_ tci: UInt16) -> UInt8 { UInt8(truncatingIfNeeded: tci >> 13) }

    /// The TCI when the frame carries an 802.1Q tag; nil for untagged or too-short frames.
    public static func tag(of frame: UnsafeRawBufferPointer) -> UInt16? {
        guard frame.count >= HeaderSize.ethernet + HeaderSize.vlanTag, frame.be16(at: 12) == EtherType.vlan else { return nil }
        return frame.be16(at: 14)
    }

    /// Splits a tagged frame without copying: the receive side writes `addresses` then
    /// `rest` (EtherType onward) to the guest, and reports `tci` in the descriptor
    /// (E1000 CTRL.VME stripping, 8254x SDM §3.2.3 "special" field). Nil when untagged.
    public static func strip(_ frame: UnsafeRawBufferPointer) -> (tci: UInt16, addresses: UnsafeRawBufferPointer, rest: UnsafeRawBufferPointer)? {
        guard let tci = tag(of: frame) else { return nil }
        return (tci, UnsafeRawBufferPointer(rebasing: frame[0 ..< 12]), UnsafeRawBufferPointer(rebasing: frame[16...]))
    }

    /// Removes the tag in place: the MAC addresses move 4 bytes later, and the untagged
    /// frame is the returned view of `frame` (starting 4 bytes in). Nil when untagged.
    public static func strip(inPlace frame: UnsafeMutableRawBufferPointer) -> (tci: UInt16, frame: UnsafeMutableRawBufferPointer)? {
        guard let tci = tag(of: UnsafeRawBufferPointer(frame)), let base = frame.baseAddress else { return nil }
        (base + HeaderSize.vlanTag).copyMemory(from: base, byteCount: 12)
        return (tci, UnsafeMutableRawBufferPointer(rebasing: frame[HeaderSize.vlanTag...]))
    }

    /// Copies `frame` into `output` with a tag carrying `tci` (E1000 VLE on transmit).
    /// Returns the tagged length, or nil when `frame` has no Ethernet header or `output`
    /// is too small.
    public static func insert(tci: UInt16, into output: UnsafeMutableRawBufferPointer, from frame: ScatteredFrame) -> Int? {
        guard frame.length >= HeaderSize.ethernet,
              output.count >= HeaderSize.vlanTag, frame.length <= output.count - HeaderSize.vlanTag
        else { return nil }
        let total = frame.length + HeaderSize.vlanTag
        guard frame.copyBytes(from: 0, into: UnsafeMutableRawBufferPointer(rebasing: output[0 ..< 12])),
              frame.copyBytes(from: 12, into: UnsafeMutableRawBufferPointer(rebasing: output[16 ..< total]))
        else { return nil }
        output.storeBE16(EtherType.vlan, at: 12)
        output.storeBE16(tci, at: 14)
        return total
    }

    public static func insert(tci: UInt16, into output: UnsafeMutableRawBufferPointer, from frame: UnsafeRawBufferPointer) -> Int? {
        insert(tci: tci, into: output, from: ScatteredFrame(frame))
    }

    /// Inserts a tag in place into the first `length` bytes of `buffer`, which must have
    /// 4 spare bytes after them. Returns the new length, or nil.
    public static func insert(tci: UInt16, inPlace buffer: UnsafeMutableRawBufferPointer, length: Int) -> Int? {
        guard length >= HeaderSize.ethernet, buffer.count >= HeaderSize.vlanTag,
              length <= buffer.count - HeaderSize.vlanTag, let base = buffer.baseAddress
        else { return nil }
        (base + 16).copyMemory(from: base + 12, byteCount: length - 12) // memmove semantics
        buffer.storeBE16(EtherType.vlan, at: 12)
        buffer.storeBE16(tci, at: 14)
        return length + HeaderSize.vlanTag
    }
}
