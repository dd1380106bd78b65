import VMMCore

/// How a frame was addressed (IEEE 802.3 §3.2.3: the I/G bit; all ones is broadcast),
/// for receive counters (E1000 BPRC/MPRC, virtio-net stats) and filtering.
public enum FrameAddressClass: Sendable, Equatable {
    case unicast, multicast, broadcast

    /// The class of a frame by its destination address; nil when shorter than 6 bytes.
    @inlinable
    public init?(destinationOf frame: UnsafeRawBufferPointer) {
        guard frame.count >= 6 else { return nil }
        if frame[0] & 1 == 0 {
            self = .unicast
        } else if frame.loadUnaligned(as: UInt32.self) == 0xFFFF_FFFF, frame.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == 0xFFFF {
            self = .broadcast
        } else {
            self = .multicast
        }
    }
}

/// The receive address filter both NICs share: promiscuous modes, broadcast accept, and
/// an exact-match table of unicast and multicast addresses. The modes follow virtio-net's
/// VIRTIO_NET_CTRL_RX commands (virtio 1.2 §5.1.6.5.1) and the 8254x RCTL bits UPE, MPE,
/// BAM (SDM §13.4.22) with receive-address registers as the table. The 8254x multicast
/// hash table (MTA) is device-specific: E1000 consults it when this filter rejects.
public struct MACFilter: Sendable, Equatable {
    /// Accept everything (virtio PROMISC; 8254x UPE together with MPE).
    public var promiscuous = false
    /// Accept every unicast frame (virtio ALLUNI; 8254x UPE).
    public var allUnicast = false
    /// Accept every multicast frame (virtio ALLMULTI; 8254x MPE).
    public var allMulticast = false
    /// Accept broadcast (8254x BAM; virtio: not NOBCAST).
    public var acceptBroadcast = true
    /// Reject every unicast frame, the table notwithstanding (virtio NOUNI).
    public var blockUnicast = false
    /// Reject every multicast frame, the table notwithstanding (virtio NOMULTI).
    public var blockMulticast = false

    /// Exact addresses as 48-bit integers (first byte most significant), so matching is
    /// integer compares without allocation.
    public private(set) var addresses: [UInt64] = []

    public init(addresses: [MACAddress] = []) {
        setAddresses(addresses)
    }

    /// Replaces the table (the NIC's own address usually comes first).
    public mutating func setAddresses(_ list: [MACAddress]) {
        addresses = list.map(MACFilter.key)
    }

    public mutating func add(_ address: MACAddress) { addresses.append(MACFilter.key(address)) }

    public func contains(_ address: MACAddress) -> Bool { addresses.contains(MACFilter.key(address)) }

    /// The filter's answer for one frame.
    public struct Decision: Sendable, Equatable {
        public var accepted: Bool
        public var addressClass: FrameAddressClass

        @inlinable
        public init(accepted: Bool, addressClass: FrameAddressClass) {
            self.accepted = accepted
            self.addressClass = addressClass
        }
    }

    /// Decides on a received frame by its destination address. Frames shorter than an
    /// address are rejected (as unicast, for want of a better class).
    ///
    /// Inlinable with what it calls: a NIC decides per frame, and the filter passed by
    /// value to a call across modules cost more than the decision (114 of an e1000
    /// receive's instructions, callgrind).
    @inlinable @inline(__always)
    public func evaluate(_ frame: UnsafeRawBufferPointer) -> Decision {
        guard let addressClass = FrameAddressClass(destinationOf: frame) else {
            return Decision(accepted: false, addressClass: .unicast)
        }
        return Decision(accepted: accepts(frame, class: addressClass), addressClass: addressClass)
    }

    public func evaluate(_ frame: [UInt8]) -> Decision {
        frame.withUnsafeBytes { evaluate($0) }
    }

    @inlinable
    func accepts(_ frame: UnsafeRawBufferPointer, class addressClass: FrameAddressClass) -> Bool {
        if promiscuous { return true }
        switch addressClass {
        case .broadcast:
            return acceptBroadcast
        case .multicast:
            if blockMulticast { return false }
            if allMulticast { return true }
        case .unicast:
            if blockUnicast { return false }
            if allUnicast { return true }
        }
        let key = MACFilter.key(frame)
        return addresses.contains(key)
    }

    static func key(_ address: MACAddress) -> UInt64 {
        let b = address.bytes
        return UInt64(b.0) << 40 | UInt64(b.1) << 32 | UInt64(b.2) << 24 | UInt64(b.3) << 16 | UInt64(b.4) << 8 | UInt64(b.5)
    }

    /// The first 6 bytes as a key (the caller checked there are 6).
    @inlinable
    static func key(_ frame: UnsafeRawBufferPointer) -> UInt64 {
        UInt64(frame.be32(at: 0) ?? 0) << 16 | UInt64(frame.be16(at: 4) ?? 0)
    }
}
