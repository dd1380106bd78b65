extension FrameBuilder {
    /// An ICMP echo request message (RFC 792, type 8 code 0), checksum filled in; put it
    /// in a frame with `ipv4(proto: 1, payload:)`.
    public static func icmpEchoRequest(id: UInt16, seq: UInt16, data: [UInt8]) -> [UInt8] {
        var m: [UInt8] = [8, 0, 0, 0] + [UInt8](be16: id) + [UInt8](be16: seq) + data
        m.put16(NaiveChecksum.checksum(m), at: 2)
        return m
    }
}
