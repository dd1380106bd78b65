import Testing
import VMMNet

/// `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6): flags, gso_type, then five le16 fields
/// (hdr_len, gso_size, csum_start, csum_offset, num_buffers). The same bytes go to TAP
/// (IFF_VNET_HDR with a 12-byte header) and into the guest's receive buffers.
@Suite struct VirtioNetHeaderTests {
    @Test func writesTheSpecLayoutAndParsesItBack() {
        let header = VirtioNetHeader(flags: 0x01, gsoType: 0x84, headerLength: 0x0302, gsoSize: 0x0504,
                                     checksumStart: 0x0706, checksumOffset: 0x0908, numBuffers: 0x0B0A)
        var bytes = [UInt8](repeating: 0xEE, count: 14)
        bytes.withUnsafeMutableBytes { header.write(to: $0) }
        #expect(bytes == [0x01, 0x84, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0xEE, 0xEE])
        #expect(bytes.withUnsafeBytes { VirtioNetHeader($0) } == header)
    }

    /// Written at any byte offset (a guest's buffer address is its own choice).
    @Test func writesAtAnyAlignment() {
        let header = VirtioNetHeader(flags: 2, numBuffers: 3)
        for offset in 0 ..< 8 {
            var bytes = [UInt8](repeating: 0xEE, count: 24)
            bytes.withUnsafeMutableBytes { header.write(to: UnsafeMutableRawBufferPointer(rebasing: $0[offset...])) }
            #expect(Array(bytes[offset ..< offset + 12]) == [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0])
            #expect(bytes[..<offset].allSatisfy { $0 == 0xEE } && bytes[(offset + 12)...].allSatisfy { $0 == 0xEE })
        }
    }

    /// Exactly 12 bytes is room enough.
    @Test func fillsABufferOfExactlyTwelveBytes() {
        var bytes = [UInt8](repeating: 0xEE, count: 12)
        bytes.withUnsafeMutableBytes { VirtioNetHeader(flags: 1, checksumOffset: 0x0201, numBuffers: 0x0403).write(to: $0) }
        #expect(bytes == [1, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04])
    }

    @Test func aShortBufferIsLeftAlone() {
        var bytes = [UInt8](repeating: 0xEE, count: 11)
        bytes.withUnsafeMutableBytes { VirtioNetHeader(flags: 1, numBuffers: 1).write(to: $0) }
        #expect(bytes == [UInt8](repeating: 0xEE, count: 11))
        #expect(bytes.withUnsafeBytes { VirtioNetHeader($0) } == nil)
    }
}
