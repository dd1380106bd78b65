/// Guest mistakes the device noticed and survived, counted per kind (and logged
/// rate-limited): what a test or an operator looks at when a guest misbehaves.
enum E1000GuestError: Int, CaseIterable, Sendable {
    case receiveRingInvalid
    case transmitRingInvalid
    case descriptorUnreadable
    case receiveBufferNotRAM
    case transmitBufferNotRAM
    case ringLengthNotMultipleOf128
    case ringReprogrammedWhileEnabled
    case headWrittenWhileEnabled
    case receiveFrameLargerThanRing
    case transmitPacketTooLarge
    case transmitPacketEmpty
    /// VLE on a packet too short to hold the two addresses the tag goes after.
    case transmitVLANInsertionImpossible
    case offloadContextInvalid
    case backendFrameLimit
    /// A TSO packet in loopback with more segments than one action may receive: lost.
    case loopbackSegmentsLost
    case mdicBadPHYAddress
    case unknownRegister

    /// Its name in QMP's `x-swiftvmm-counters` (an API name: spelled out, not derived).
    var name: String {
        switch self {
        case .receiveRingInvalid: "receive-ring-invalid"
        case .transmitRingInvalid: "transmit-ring-invalid"
        case .descriptorUnreadable: "descriptor-unreadable"
        case .receiveBufferNotRAM: "receive-buffer-not-ram"
        case .transmitBufferNotRAM: "transmit-buffer-not-ram"
        case .ringLengthNotMultipleOf128: "ring-length-not-multiple-of-128"
        case .ringReprogrammedWhileEnabled: "ring-reprogrammed-while-enabled"
        case .headWrittenWhileEnabled: "head-written-while-enabled"
        case .receiveFrameLargerThanRing: "receive-frame-larger-than-ring"
        case .transmitPacketTooLarge: "transmit-packet-too-large"
        case .transmitPacketEmpty: "transmit-packet-empty"
        case .transmitVLANInsertionImpossible: "transmit-vlan-insertion-impossible"
        case .offloadContextInvalid: "offload-context-invalid"
        case .backendFrameLimit: "backend-frame-limit"
        case .loopbackSegmentsLost: "loopback-segments-lost"
        case .mdicBadPHYAddress: "mdic-bad-phy-address"
        case .unknownRegister: "unknown-register"
        }
    }
}

struct E1000GuestErrorCounts {
    private var counts = [UInt64](repeating: 0, count: E1000GuestError.allCases.count)
    mutating func record(_ e: E1000GuestError) { counts[e.rawValue] &+= 1 }
    subscript(_ e: E1000GuestError) -> UInt64 { counts[e.rawValue] }
    mutating func clear() { for i in counts.indices { counts[i] = 0 } }

    /// The kinds seen so far, by QMP name (`receive-ring-invalid`).
    var seen: [(name: String, value: UInt64)] {
        E1000GuestError.allCases.filter { counts[$0.rawValue] > 0 }.map { ($0.name, counts[$0.rawValue]) }
    }
}
