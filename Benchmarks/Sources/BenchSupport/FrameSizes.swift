/// The frame sizes of issue 7: minimum, standard MTU, jumbo MTU, and a 64 KiB TSO send.
package enum FrameSize: CaseIterable {
    case small, mtu, jumbo, tso

    /// Ethernet frame length, header onward, without FCS.
    package var length: Int {
        switch self {
        case .small: 64
        case .mtu: 1514
        case .jumbo: 9014
        case .tso: TSO.frameLength
        }
    }

    /// The key used in BENCH lines and the table.
    package var key: String {
        switch self {
        case .small: "64"
        case .mtu: "1500"
        case .jumbo: "9000"
        case .tso: "tso64k"
        }
    }

    package var label: String {
        switch self {
        case .small: "64 B"
        case .mtu: "1500 MTU (1514 B)"
        case .jumbo: "9000 MTU (9014 B)"
        case .tso: "64 KiB TSO"
        }
    }

    package static func parse(_ s: String) -> FrameSize? { allCases.first { $0.key == s } }
}
