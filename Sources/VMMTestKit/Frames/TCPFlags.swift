/// The TCP header's flag bits (byte 13): RFC 9293 §3.1, ECE and CWR from RFC 3168 §6.1.
public struct TCPFlags: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x01), syn = TCPFlags(rawValue: 0x02), rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08), ack = TCPFlags(rawValue: 0x10), urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40), cwr = TCPFlags(rawValue: 0x80)
}
