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
}

struct E1000GuestErrorCounts {
    private var counts = [UInt64](repeating: 0, count: E1000GuestError.allCases.count)
    mutating func record(_ e: E1000GuestError) { counts[e.rawValue] &+= 1 }
    subscript(_ e: E1000GuestError) -> UInt64 { counts[e.rawValue] }
    mutating func clear() { for i in counts.indices { counts[i] = 0 } }

    /// The kinds seen so far, by QMP name (`receive-ring-invalid`).
    var seen: [(name: String, value: UInt64)] {
        E1000GuestError.allCases.filter { counts[$0.rawValue] > 0 }.map { (Self.kebab("\($0)"), counts[$0.rawValue]) }
    }

    private static func kebab(_ camel: String) -> String {
        camel.reduce(into: "") { out, c in
            if c.isUppercase { out += "-" + c.lowercased() } else { out.append(c) }
        }
    }
}
