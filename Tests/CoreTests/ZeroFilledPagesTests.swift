#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMMCore

@Suite("ZeroFilledPages")
struct ZeroFilledPagesTests {
    /// Reads as zero before any write, keeps what is written, and `zero()` clears it again.
    @Test func zeroUntilWrittenAndAfterZero() {
        let pages = ZeroFilledPages(byteCount: 128 << 10)
        #expect(pages.bytes.count == 128 << 10)
        #expect(pages.bytes.allSatisfy { $0 == 0 })
        pages.bytes.storeBytes(of: 0xDEAD_BEEF as UInt32, toByteOffset: 0x3818, as: UInt32.self)
        pages.bytes[pages.bytes.count - 1] = 0x5A
        #expect(pages.bytes.load(fromByteOffset: 0x3818, as: UInt32.self) == 0xDEAD_BEEF)
        pages.zero()
        #expect(pages.bytes.allSatisfy { $0 == 0 })
    }

    /// Whole pages: a request that is not a page multiple rounds up.
    @Test func roundsUpToPages() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        #expect(ZeroFilledPages(byteCount: 1).bytes.count == page)
        #expect(ZeroFilledPages(byteCount: page + 1).bytes.count == 2 * page)
    }

    /// Only what is touched becomes resident (mincore): the point of the type.
    @Test func untouchedPagesStayNonResident() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = ZeroFilledPages(byteCount: 32 * page)
        pages.bytes[5 * page] = 1
        var residency = [UInt8](repeating: 0, count: 32)
        #expect(mincore(pages.bytes.baseAddress, pages.bytes.count, &residency) == 0)
        #expect(residency.map { $0 & 1 } == (0 ..< 32).map { $0 == 5 ? 1 : 0 })
    }
}
