import VMMNet

/// virtio-net feature bits (virtio 1.2 §5.1.3) and the rules that tie them together.
enum VirtioNetFeature {
    static let csum: UInt64 = 1 << 0
    static let guestCsum: UInt64 = 1 << 1
    static let ctrlGuestOffloads: UInt64 = 1 << 2
    static let mtu: UInt64 = 1 << 3
    static let mac: UInt64 = 1 << 5
    static let guestTSO4: UInt64 = 1 << 7
    static let guestTSO6: UInt64 = 1 << 8
    static let guestECN: UInt64 = 1 << 9
    static let guestUFO: UInt64 = 1 << 10
    static let hostTSO4: UInt64 = 1 << 11
    static let hostTSO6: UInt64 = 1 << 12
    static let hostECN: UInt64 = 1 << 13
    static let hostUFO: UInt64 = 1 << 14
    static let mergeableRXBuffers: UInt64 = 1 << 15
    static let status: UInt64 = 1 << 16
    static let ctrlVQ: UInt64 = 1 << 17
    static let ctrlRX: UInt64 = 1 << 18
    static let ctrlRXExtra: UInt64 = 1 << 20
    static let mq: UInt64 = 1 << 22
    static let ctrlMACAddress: UInt64 = 1 << 23

    /// The bits that describe what the guest accepts on receive (and CTRL_GUEST_OFFLOADS sets).
    static let guestOffloadBits: UInt64 = guestCsum | guestTSO4 | guestTSO6 | guestECN | guestUFO

    /// §5.1.3.1 feature dependencies: a feature set that breaks them is refused at FEATURES_OK.
    static func dependenciesSatisfied(_ f: UInt64) -> Bool {
        func has(_ bit: UInt64) -> Bool { f & bit != 0 }
        let rules: [(feature: UInt64, requires: UInt64)] = [
            (guestTSO4 | guestTSO6 | guestUFO, guestCsum),
            (guestECN, guestTSO4 | guestTSO6),
            (hostTSO4 | hostTSO6 | hostUFO, csum),
            (hostECN, hostTSO4 | hostTSO6),
            (ctrlRX | mq | ctrlMACAddress | ctrlGuestOffloads, ctrlVQ),
            (ctrlRXExtra, ctrlRX),
        ]
        for r in rules where f & r.feature != 0 && f & r.requires == 0 { return false }
        return true
    }

    /// What receive offloads guest bits `f` allow, in the backend's terms.
    static func receiveOffloads(_ f: UInt64) -> NetOffloads {
        var o: NetOffloads = []
        if f & guestCsum != 0 { o.insert(.checksum) }
        if f & guestTSO4 != 0 { o.insert(.tso4) }
        if f & guestTSO6 != 0 { o.insert(.tso6) }
        if f & guestECN != 0 { o.insert(.tsoECN) }
        if f & guestUFO != 0 { o.insert(.ufo) }
        return o
    }
}
