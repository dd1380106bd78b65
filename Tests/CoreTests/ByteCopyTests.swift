import Testing
@testable import VMMCore

@Suite("ByteCopy")
struct ByteCopyTests {
    /// Every distance modulo 4 KiB (the backward path takes 1–63 on CPUs without FSRM)
    /// and sizes around the 256-byte and 64-byte-block edges copy exactly the bytes asked
    /// for, no more; the backward copy itself is checked on every CPU.
    @Test(arguments: [false, true])
    func copiesExactlyAtEveryDistance(backward: Bool) {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 4096)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000 + 4096, alignment: 4096)
        defer { source.deallocate(); destination.deallocate() }
        for i in 0 ..< source.count { source[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8) }
        for distance in [0, 1, 2, 15, 16, 31, 63, 64, 65, 2048, 4095] {
            for count in [0, 1, 63, 64, 255, 256, 257, 1514, 9014, 65_536] {
                destination.initializeMemory(as: UInt8.self, repeating: 0xEE)
                let d = destination.baseAddress! + distance
                if backward {
                    ByteCopy.copyBackward(to: d, from: source.baseAddress!, count: count)
                } else {
                    ByteCopy.copy(to: d, from: source.baseAddress!, count: count)
                }
                let copied = UnsafeRawBufferPointer(start: d, count: count)
                #expect(copied.elementsEqual(UnsafeRawBufferPointer(rebasing: source[0 ..< count])), "distance \(distance), \(count) bytes")
                #expect(destination[distance + count] == 0xEE, "distance \(distance), \(count) bytes: wrote past the end")
                if distance > 0 { #expect(destination[distance - 1] == 0xEE) }
            }
        }
    }

    /// The buffer form copies what fits instead of trapping on a smaller destination.
    @Test func bufferFormCopiesWhatFits() {
        let source: [UInt8] = Array(0 ..< 100)
        var destination = [UInt8](repeating: 0xEE, count: 40)
        let copied = source.withUnsafeBytes { s in destination.withUnsafeMutableBytes { ByteCopy.copy(to: $0, from: s) } }
        #expect(copied == 40)
        #expect(destination == Array(0 ..< 40))
    }
}
