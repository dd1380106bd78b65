import Testing
import VMMCore

/// The guest-physical-to-host mapper (issue 2 §1): bhyve's `paddr_guest2host` with the
/// edge cases where hyperkit handed out a bad pointer.
@Suite struct GuestMemoryTests {
    /// Two adjacent regions [0, 64K) and [64K, 128K), then a hole, then [1M, 1M+64K).
    static func makeMemory() throws -> GuestMemory {
        try GuestMemory(layout: [(0, 0x1_0000), (0x1_0000, 0x1_0000), (0x10_0000, 0x1_0000)])
    }

    @Test func rangeTouchingRegionEndIsRAM() throws {
        let m = try Self.makeMemory()
        let last = try m.hostRange(GuestAddress(0x10_FFF0), length: 0x10)
        #expect(last.count == 0x10)
        #expect(throws: GuestMemoryError.notRAM(address: 0x10_FFF1, length: 0x10)) {
            try m.hostRange(GuestAddress(0x10_FFF1), length: 0x10)
        }
        #expect(m.isRAM(GuestAddress(0x10_FFFF), length: 1))
        #expect(!m.isRAM(GuestAddress(0x11_0000), length: 1))
    }

    @Test func hostRangeRefusesToSpanRegionsButCopiesDo() throws {
        let m = try Self.makeMemory()
        // One host view cannot cover two mmaps...
        #expect(throws: GuestMemoryError.self) { try m.hostRange(GuestAddress(0xFFFC), length: 8) }
        // ...but the copies and typed access walk across the boundary.
        try m.store(UInt64(0x1122_3344_5566_7788), at: GuestAddress(0xFFFC))
        #expect(try m.load(UInt64.self, at: GuestAddress(0xFFFC)) == 0x1122_3344_5566_7788)
        #expect(try m.readBytes(at: GuestAddress(0xFFFC), count: 8) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        #expect(try m.load(UInt32.self, at: GuestAddress(0x1_0000)) == 0x1122_3344)
        #expect(m.isRAM(GuestAddress(0), length: 0x2_0000))
    }

    @Test func rangeInOrIntoTheHoleIsRejectedWithoutSideEffects() throws {
        let m = try Self.makeMemory()
        try m.fill(GuestAddress(0x1_FFF0), length: 0x10, with: 0xAA)
        // Starts in RAM, runs into the hole: nothing may be written.
        #expect(throws: GuestMemoryError.notRAM(address: 0x1_FFF8, length: 0x10)) {
            try m.writeBytes([UInt8](repeating: 0x55, count: 0x10), at: GuestAddress(0x1_FFF8))
        }
        #expect(try m.readBytes(at: GuestAddress(0x1_FFF0), count: 0x10) == [UInt8](repeating: 0xAA, count: 0x10))
        #expect(throws: GuestMemoryError.self) { try m.load(UInt32.self, at: GuestAddress(0x8_0000)) }
        #expect(throws: GuestMemoryError.self) { try m.store(UInt8(1), at: GuestAddress(0x2_0000)) }
        #expect(throws: GuestMemoryError.self) { try m.readBytes(at: GuestAddress(0x2_0000), count: 1) }
        #expect(throws: GuestMemoryError.self) { try m.fill(GuestAddress(0xF_FFFF), length: 2, with: 0) }
    }

    /// The datapath's non-throwing lookup against views and errors worked out here from the
    /// layout alone (not from `hostRange`, which is built on it): at region edges, across
    /// adjacent regions, in the hole, for zero lengths, past 2^64, and in borrowed memory
    /// whose last region ends exactly at 2^64.
    @Test func hostRangeIfRAMGivesTheViewTheLayoutDefines() throws {
        let owned = try Self.makeMemory()
        let top = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 16)
        defer { top.deallocate() }
        let borrowed = GuestMemory(borrowedRegionLimit: 2)
        try borrowed.insert(GuestMemoryRegion(base: GuestAddress(UInt64.max - 0xFFF), size: 0x1000, host: top))
        let addresses: [UInt64] = [0, 1, 0xFFF8, 0xFFFF, 0x1_0000, 0x1_FFFF, 0x2_0000, 0xF_FFFF, 0x10_0000, 0x10_FFF0,
                                   0x10_FFFF, 0x11_0000, UInt64.max - 0xFFF, UInt64.max - 7, UInt64.max]
        let lengths: [UInt64] = [0, 1, 2, 8, 0x10, 0x1000, 0xFFFF, 0x1_0000, 0x1_0001, 0x2_0000, UInt64.max - 1, UInt64.max]
        for memory in [owned, borrowed] {
            for a in addresses {
                for n in lengths {
                    let place = "0x\(String(a, radix: 16)) + 0x\(String(n, radix: 16))"
                    let view = memory.hostRangeIfRAM(GuestAddress(a), length: n)
                    if n == 0 {
                        #expect(view?.count == 0, "\(place)")
                        continue
                    }
                    let wraps = a.addingReportingOverflow(n - 1).overflow
                    // The one region holding the whole range, if any.
                    let holder = memory.regions.first { r in a >= r.base.raw && a - r.base.raw < r.size && n <= r.size - (a - r.base.raw) }
                    if !wraps, let r = holder {
                        #expect(view?.baseAddress == r.host + Int(a - r.base.raw) && view?.count == Int(n), "\(place)")
                        #expect((try? memory.hostRange(GuestAddress(a), length: n))?.baseAddress == view?.baseAddress, "\(place)")
                    } else {
                        #expect(view == nil, "\(place)")
                        let expected: GuestMemoryError = wraps ? .wraps(address: a, length: n) : .notRAM(address: a, length: n)
                        #expect(throws: expected, "\(place)") { try memory.hostRange(GuestAddress(a), length: n) }
                    }
                }
            }
        }
    }

    @Test func rangesWrappingPast2To64AreTypedErrors() throws {
        let m = try Self.makeMemory()
        #expect(throws: GuestMemoryError.wraps(address: UInt64.max, length: 2)) {
            try m.hostRange(GuestAddress(UInt64.max), length: 2)
        }
        #expect(throws: GuestMemoryError.wraps(address: UInt64.max - 3, length: 8)) {
            try m.load(UInt64.self, at: GuestAddress(UInt64.max - 3))
        }
        #expect(throws: GuestMemoryError.wraps(address: 0x10, length: UInt64.max)) {
            try m.fill(GuestAddress(0x10), length: UInt64.max, with: 0)
        }
        // Exactly reaching 2^64 does not wrap (last byte is 2^64-1); it's just not RAM.
        #expect(throws: GuestMemoryError.notRAM(address: UInt64.max, length: 1)) {
            try m.hostRange(GuestAddress(UInt64.max), length: 1)
        }
        #expect(GuestAddress(UInt64.max).checkedAdd(1) == nil)
        #expect(GuestAddress(UInt64.max - 1).checkedAdd(1) == GuestAddress(UInt64.max))
        #expect(GuestAddress(0x1000).checkedAdd(index: UInt64.max, stride: 16) == nil)
        #expect(GuestAddress(0x1000).checkedAdd(index: 3, stride: 16) == GuestAddress(0x1030))
        #expect(GuestAddress(0x10).offset(from: GuestAddress(0x20)) == nil)
    }

    @Test func zeroLengthTouchesNothingAnywhere() throws {
        let m = try Self.makeMemory()
        #expect(try m.hostRange(GuestAddress(0x8_0000), length: 0).count == 0) // in the hole
        #expect(try m.hostRange(GuestAddress(UInt64.max), length: 0).count == 0)
        try m.fill(GuestAddress(UInt64.max), length: 0, with: 1)
        try m.writeBytes([], at: GuestAddress(0x8_0000))
        #expect(try m.readBytes(at: GuestAddress(0x8_0000), count: 0) == [])
        var segments: [UnsafeMutableRawBufferPointer] = []
        try m.resolve([GuestBuffer(address: GuestAddress(0x8_0000), length: 0)], into: &segments)
        #expect(segments.isEmpty)
    }

    @Test func typedAccessIsLittleEndianAndUnaligned() throws {
        let m = try Self.makeMemory()
        try m.writeBytes([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09], at: GuestAddress(0x101))
        #expect(try m.load(UInt8.self, at: GuestAddress(0x101)) == 0x01)
        #expect(try m.load(UInt16.self, at: GuestAddress(0x101)) == 0x0201)
        #expect(try m.load(UInt32.self, at: GuestAddress(0x102)) == 0x0504_0302)
        #expect(try m.load(UInt64.self, at: GuestAddress(0x101)) == 0x0807_0605_0403_0201)
        try m.store(UInt16(0xBEEF), at: GuestAddress(0x201))
        #expect(try m.readBytes(at: GuestAddress(0x201), count: 2) == [0xEF, 0xBE])
        try m.store(UInt32(0xDEAD_BEEF), at: GuestAddress(0x303))
        #expect(try m.readBytes(at: GuestAddress(0x303), count: 4) == [0xEF, 0xBE, 0xAD, 0xDE])
    }

    @Test func scatterGatherResolvesAcrossRegionsAndFailsAtomically() throws {
        let m = try Self.makeMemory()
        try m.writeBytes(Array(0 ..< 32), at: GuestAddress(0xFFF0))
        var segments: [UnsafeMutableRawBufferPointer] = []
        try m.resolve([GuestBuffer(address: GuestAddress(0xFFF0), length: 32),
                       GuestBuffer(address: GuestAddress(0x10_0000), length: 4)], into: &segments)
        // The first buffer crosses the region boundary: two views.
        #expect(segments.map(\.count) == [16, 16, 4])
        #expect(Array(segments[0]) + Array(segments[1]) == Array(0 ..< 32))
        // A bad buffer in the list leaves what the caller had untouched.
        let before = segments.count
        #expect(throws: GuestMemoryError.self) {
            try m.resolve([GuestBuffer(address: GuestAddress(0), length: 8),
                           GuestBuffer(address: GuestAddress(0x2_0000), length: 8)], into: &segments)
        }
        #expect(segments.count == before)
        #expect(throws: GuestMemoryError.self) {
            try m.resolve([GuestBuffer(address: GuestAddress(UInt64.max - 1), length: 8)], into: &segments)
        }
    }

    @Test func layoutErrors() {
        #expect(throws: GuestMemoryLayoutError.emptyRegion(base: 0)) { try GuestMemory(layout: [(0, 0)]) }
        #expect(throws: GuestMemoryLayoutError.overlapping(base: 0x1000)) {
            try GuestMemory(layout: [(0, 0x2000), (0x1000, 0x1000)])
        }
        #expect(throws: GuestMemoryLayoutError.wraps(base: UInt64.max, size: 2)) {
            try GuestMemory(layout: [(UInt64.max, 2)])
        }
    }

    @Test func refusedLayoutMapsNothing() {
        // A huge first region followed by a bad one: validation happens before any mmap, so
        // repeating this would exhaust the address space if the first mapping leaked.
        for _ in 0 ..< 64 {
            #expect(throws: GuestMemoryLayoutError.overlapping(base: 0x1000)) {
                try GuestMemory(layout: [(0, 1 << 40), (0x1000, 0x1000)])
            }
        }
        #expect(throws: GuestMemoryLayoutError.overlapping(base: 0x1000)) {
            try GuestMemory(layout: [(UInt64.max - 0xFFF, 0x1000), (0x1000, 1), (0, 0x2000)])
        }
        // Adjacent regions, one ending exactly at 2^64, are fine.
        #expect((try? GuestMemory(layout: [(UInt64.max - 0xFFF, 0x1000), (5, 1), (0, 5)]))?.regions.count == 3)
    }

    @Test func pcLayoutSplitsAroundThePCIHole() throws {
        #expect(PCMemoryMap.ramLayout(size: 1 << 30).map(\.size) == [1 << 30])
        let big = PCMemoryMap.ramLayout(size: 4 << 30)
        #expect(big.map(\.base) == [0, PCMemoryMap.highRAMStart])
        #expect(big.map(\.size) == [PCMemoryMap.lowRAMEnd, (4 << 30) - PCMemoryMap.lowRAMEnd])
        let m = try GuestMemory(pcRAMSize: 4 << 30) // MAP_NORESERVE: costs nothing until touched
        #expect(m.totalSize == 4 << 30)
        #expect(!m.isRAM(GuestAddress(PCMemoryMap.lowRAMEnd), length: 1))
        #expect(m.isRAM(GuestAddress(PCMemoryMap.highRAMStart), length: 4096))
    }
}
