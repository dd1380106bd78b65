import VMMCore
import VMMNet

/// The 82540's receive address filtering (Intel 8254x SDM §3.2.1, §13.5.x): 16 exact
/// Receive Address registers (RAL/RAH with the Address Valid bit), the 4096-bit
/// Multicast Table Array hashed per RCTL.MO, and the VLAN Filter Table Array. The
/// promiscuous/broadcast/exact-match decision is VMMNet's `MACFilter`; the MTA hash and
/// VFTA are what only this chip has.
struct E1000ReceiveFilter {
    static let addressCount = 16
    static let addressValid: UInt32 = 1 << 31
    /// RAH: address bits 15:0, Address Select 17:16, AV 31 (the rest reads as 0).
    static let rahWritable: UInt32 = 0x8003_FFFF

    /// RAL0, RAH0, RAL1, RAH1, …
    private(set) var receiveAddresses = [UInt32](repeating: 0, count: 2 * addressCount)
    private(set) var multicastTable = [UInt32](repeating: 0, count: 128)
    private(set) var vlanTable = [UInt32](repeating: 0, count: 128)
    private var macFilter = MACFilter()
    /// The valid destination-address entries, in register order (entry 0 is the NIC's own).
    private(set) var exactAddresses: [MACAddress] = []

    /// Power-on: all tables clear, entry 0 loaded from the EEPROM (§5.6.1: the MAC
    /// address is loaded into RAL0/RAH0 with AV set after reset).
    init(mac: MACAddress) {
        let b = mac.array
        receiveAddresses[0] = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        receiveAddresses[1] = UInt32(b[4]) | UInt32(b[5]) << 8 | Self.addressValid
        rebuildExactTable()
    }

    // MARK: Registers

    func readAddress(_ index: Int) -> UInt32 { receiveAddresses.indices.contains(index) ? receiveAddresses[index] : 0 }

    mutating func writeAddress(_ index: Int, _ value: UInt32) {
        guard receiveAddresses.indices.contains(index) else { return }
        receiveAddresses[index] = index & 1 == 1 ? value & Self.rahWritable : value
        rebuildExactTable()
    }

    func readMulticast(_ index: Int) -> UInt32 { multicastTable.indices.contains(index) ? multicastTable[index] : 0 }
    mutating func writeMulticast(_ index: Int, _ value: UInt32) {
        if multicastTable.indices.contains(index) { multicastTable[index] = value }
    }

    func readVLAN(_ index: Int) -> UInt32 { vlanTable.indices.contains(index) ? vlanTable[index] : 0 }
    mutating func writeVLAN(_ index: Int, _ value: UInt32) {
        if vlanTable.indices.contains(index) { vlanTable[index] = value }
    }

    /// Only destination-address entries (AS = 00) with AV set take part in filtering.
    private mutating func rebuildExactTable() {
        var list: [MACAddress] = []
        for i in 0 ..< Self.addressCount {
            let low = receiveAddresses[2 * i], high = receiveAddresses[2 * i + 1]
            guard high & Self.addressValid != 0, (high >> 16) & 3 == 0 else { continue }
            list.append(MACAddress([UInt8(truncatingIfNeeded: low), UInt8(truncatingIfNeeded: low >> 8),
                                    UInt8(truncatingIfNeeded: low >> 16), UInt8(truncatingIfNeeded: low >> 24),
                                    UInt8(truncatingIfNeeded: high), UInt8(truncatingIfNeeded: high >> 8)]))
        }
        macFilter.setAddresses(list)
        exactAddresses = list
    }

    // MARK: Decisions

    /// Whether a frame passes the address filter under `rctl` (UPE, MPE, BAM, MO), and
    /// how it was addressed (for BPRC/MPRC). Nil when the frame is rejected.
    mutating func accept(_ frame: UnsafeRawBufferPointer, rctl: UInt32) -> FrameAddressClass? {
        macFilter.allUnicast = rctl & Rctl.unicastPromiscuous != 0
        macFilter.allMulticast = rctl & Rctl.multicastPromiscuous != 0
        macFilter.acceptBroadcast = rctl & Rctl.broadcastAccept != 0
        let decision = macFilter.evaluate(frame)
        if decision.accepted { return decision.addressClass }
        // Broadcast is a multicast address too: with BAM clear it can still match the MTA.
        guard decision.addressClass != .unicast, frame.count >= 6 else { return nil }
        return multicastHashHit(frame, offsetMode: (rctl >> Rctl.multicastOffsetShift) & 3) ? decision.addressClass : nil
    }

    /// §13.5.x MTA: 12 bits of the destination address picked by MO select one of 4096
    /// bits (register = hash[11:5], bit = hash[4:0]); Linux's e1000_hash_mc_addr.
    func multicastHashHit(_ frame: UnsafeRawBufferPointer, offsetMode: UInt32) -> Bool {
        let b4 = UInt32(frame[4]), b5 = UInt32(frame[5])
        let hash: UInt32
        switch offsetMode {
        case 0: hash = b4 >> 4 | b5 << 4
        case 1: hash = b4 >> 3 | b5 << 5
        case 2: hash = b4 >> 2 | b5 << 6
        default: hash = b4 | b5 << 8
        }
        let h = Int(hash & 0xFFF)
        return multicastTable[h >> 5] >> UInt32(h & 31) & 1 == 1
    }

    /// The VLAN IDs whose VFTA bit is set.
    var acceptedVLANs: [Int] {
        (0 ..< 4096).filter { vlanTable[$0 >> 5] >> UInt32($0 & 31) & 1 == 1 }
    }

    /// RCTL.VFE: a tagged frame passes only when its VLAN ID's VFTA bit is set (§3.2.3).
    func vlanAccepted(tci: UInt16) -> Bool {
        let vid = Int(VLAN.vid(tci))
        return vlanTable[vid >> 5] >> UInt32(vid & 31) & 1 == 1
    }
}

/// What QMP `query-rx-filter` reports for the 82540 (QEMU's e1000 reports nothing): RCTL's
/// modes, the exact-match entries (entry 0 is the main address; multicast entries go to
/// the multicast table), and the VLAN filter. Multicast addresses that pass through the MTA
/// hash cannot be listed; `multicast` stays "normal" for them.
extension E1000Device: ReceiveFilterReporting {
    public var receiveFilter: ReceiveFilterInfo {
        let rctl = reg(Reg.rctl)
        let addresses = filter.exactAddresses
        var info = ReceiveFilterInfo(mainMAC: addresses.first ?? mac)
        info.unicast = rctl & Rctl.unicastPromiscuous != 0 ? .all : .normal
        info.multicast = rctl & Rctl.multicastPromiscuous != 0 ? .all : .normal
        info.promiscuous = info.unicast == .all && info.multicast == .all
        info.broadcastAllowed = rctl & Rctl.broadcastAccept != 0
        info.vlan = rctl & Rctl.vlanFilter != 0 ? .normal : .all
        if info.vlan == .normal { info.vlanTable = filter.acceptedVLANs }
        info.unicastTable = addresses.dropFirst().filter { !$0.isMulticast }
        info.multicastTable = addresses.dropFirst().filter { $0.isMulticast }
        return info
    }
}
