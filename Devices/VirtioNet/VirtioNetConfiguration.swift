import Virtio
import VMMCore

/// The user's choices for one virtio-net device (`--device virtio-net,mac=…,mtu=…`).
struct VirtioNetConfiguration: Equatable {
    var mac: MACAddress
    /// nil: 1500, or less when the backend takes smaller frames.
    var mtu: UInt16?
    var queueSize: UInt16 = 256
    var queuePairs = 1
    var checksum = true
    var guestChecksum = true
    var tso = true
    var guestTSO = true
    var mergeableRXBuffers = true
    var ring = VirtioRingOptions()
    var controlQueue = true
    var status = true

    static let help: [OptionHelp] = [
        OptionHelp("mac", "52:54:00:12:34:56", "the NIC's address (default 52:54:00:12:34:56 + instance)"),
        OptionHelp("mtu", "68-65517", "MTU the guest starts at and may not exceed (VIRTIO_NET_F_MTU; at most what the backend takes). Without it the guest picks its MTU; larger frames than the backend takes are dropped and counted"),
        OptionHelp("queue-size", "16-1024", "entries per virtqueue, a power of two (default 256)"),
        OptionHelp("queues", "1-8", "RX/TX queue pairs (VIRTIO_NET_F_MQ when > 1; default 1)"),
        OptionHelp("csum", "on|off", "transmit checksum offload (VIRTIO_NET_F_CSUM, needed for TSO)"),
        OptionHelp("guest_csum", "on|off", "receive partial checksums (VIRTIO_NET_F_GUEST_CSUM)"),
        OptionHelp("tso", "on|off", "transmit segmentation offload (HOST_TSO4/6, HOST_ECN)"),
        OptionHelp("guest_tso", "on|off", "receive large segments (GUEST_TSO4/6/ECN; only with a vnet-header backend)"),
        OptionHelp("mrg_rxbuf", "on|off", "mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF)"),
        OptionHelp("ctrl_vq", "on|off", "control queue: RX modes, MAC filter, offloads, MQ"),
        OptionHelp("status", "on|off", "link status in config space (VIRTIO_NET_F_STATUS)"),
        OptionHelp("net", "BACKEND", "network backend (user, tap:NAME, vde:URL, stream:…); see `swiftvmm backends`"),
    ] + VirtioRingOptions.help

    /// Takes the device's own options (the backend factory takes `net=` and its keys).
    init(options: inout DeviceOptions, instanceIndex: Int) throws(OptionError) {
        mac = try options.takeMAC("mac") ?? MACAddress.defaultNIC(index: instanceIndex)
        mtu = try options.takeInteger("mtu", in: UInt16(68) ... UInt16(65517))
        if let v = try options.takeInteger("queue-size", in: UInt16(16) ... UInt16(1024)) {
            guard v.nonzeroBitCount == 1 else {
                throw .badValue(key: "queue-size", value: String(v), reason: "must be a power of two (virtio 1.2 §2.7)")
            }
            queueSize = v
        }
        if let v = try options.takeInteger("queues", in: 1 ... 8) { queuePairs = v }
        func flag(_ key: String, _ value: inout Bool) throws(OptionError) {
            if let v = try options.takeBool(key) { value = v }
        }
        try flag("csum", &checksum)
        try flag("guest_csum", &guestChecksum)
        try flag("tso", &tso)
        try flag("guest_tso", &guestTSO)
        try flag("mrg_rxbuf", &mergeableRXBuffers)
        ring = try VirtioRingOptions(options: &options)
        try flag("ctrl_vq", &controlQueue)
        try flag("status", &status)
        if queuePairs > 1 && !controlQueue {
            throw .badValue(key: "queues", value: String(queuePairs), reason: "more than one queue pair needs ctrl_vq=on (VIRTIO_NET_F_MQ requires VIRTIO_NET_F_CTRL_VQ)")
        }
    }

    /// The feature bits to offer, given what the backend can do: guest segmentation only
    /// when the backend delivers virtio-net headers; UFO only when it completes UFO itself.
    func offeredFeatures(backend: BackendOffers) -> UInt64 {
        typealias F = VirtioNetFeature
        // VIRTIO_NET_F_MTU only when the user set mtu=: Linux's virtnet_probe makes the
        // offered value both the starting and the largest MTU, so offering the default
        // would forbid `ip link set mtu 9000` (QEMU offers it only with host_mtu= too).
        var f = F.mac
        if mtu != nil { f |= F.mtu }
        if status { f |= F.status }
        if checksum {
            f |= F.csum
            if tso { f |= F.hostTSO4 | F.hostTSO6 | F.hostECN }
            if tso && backend.completesUFO { f |= F.hostUFO }
        }
        if guestChecksum {
            f |= F.guestCsum
            if guestTSO && backend.deliversSegments { f |= F.guestTSO4 | F.guestTSO6 | F.guestECN }
            if guestTSO && backend.deliversUFO { f |= F.guestUFO }
        }
        if mergeableRXBuffers { f |= F.mergeableRXBuffers }
        if controlQueue {
            f |= F.ctrlVQ | F.ctrlRX | F.ctrlRXExtra | F.ctrlMACAddress | F.ctrlGuestOffloads
            if queuePairs > 1 { f |= F.mq }
        }
        return f
    }
}

/// The part of a backend's capabilities that decides which features may be offered.
struct BackendOffers {
    var deliversSegments: Bool
    var deliversUFO: Bool
    var completesUFO: Bool
}
