import VMMCore

/// What a NIC's guest driver asked its receive filter to accept, in the shape of QEMU's
/// `RxFilterInfo` (qapi/net.json), for QMP `query-rx-filter`.
public struct ReceiveFilterInfo: Sendable, Equatable {
    /// QEMU's `RxState`: frames of a class are filtered by the table, or all / none pass.
    public enum Mode: String, Sendable { case normal, none, all }

    public var promiscuous = false
    public var multicast = Mode.normal
    public var unicast = Mode.normal
    public var vlan = Mode.all
    public var broadcastAllowed = true
    public var multicastOverflow = false
    public var unicastOverflow = false
    public var mainMAC: MACAddress
    public var vlanTable: [Int] = []
    public var unicastTable: [MACAddress] = []
    public var multicastTable: [MACAddress] = []

    public init(mainMAC: MACAddress) { self.mainMAC = mainMAC }
}

/// A NIC that can say what its receive filter accepts (the device side of a `LinkControl`).
public protocol ReceiveFilterReporting: AnyObject {
    /// Called with the device's lock held.
    var receiveFilter: ReceiveFilterInfo { get }
}

public extension NetworkBackend {
    /// The guest changed the NIC's receive filter (addresses, promiscuous or multicast
    /// modes): a control socket may tell its client (QMP `NIC_RX_FILTER_CHANGED`).
    func receiveFilterChanged() {
        (self as? LinkControl)?.noteReceiveFilterChanged()
    }
}
