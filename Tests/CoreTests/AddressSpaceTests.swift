import Synchronization
import Testing
import VMMCore

/// A handler that remembers what reached it and answers reads with offset+size.
final class ProbeHandler: AccessHandler, @unchecked Sendable {
    let log = Mutex<[(offset: UInt64, size: Int, value: UInt64?)]>([])
    func read(offset: UInt64, size: Int) -> UInt64 {
        log.withLock { $0.append((offset, size, nil)) }
        return 0x1000 + offset * 16 + UInt64(size)
    }
    func write(offset: UInt64, size: Int, value: UInt64) { log.withLock { $0.append((offset, size, value)) } }
    var count: Int { log.withLock { $0.count } }
}

@Suite struct AddressSpaceTests {
    @Test func dispatchesByRangeWithRelativeOffsets() throws {
        let space = AddressSpace(kind: .memory)
        let a = ProbeHandler(), b = ProbeHandler(), c = ProbeHandler()
        try space.map(0x2000 ..< 0x3000, owner: "b", handler: b)
        try space.map(0x1000 ..< 0x2000, owner: "a", handler: a) // adjacent, inserted before
        try space.map(0x8000 ..< 0x8010, owner: "c", handler: c)
        #expect(space.read(0x1FFC, size: 4) == 0x1000 + 0xFFC * 16 + 4)
        space.write(0x2000, size: 8, value: 7)
        #expect(b.log.withLock { $0.last?.offset } == 0)
        #expect(b.log.withLock { $0.last?.value } == 7)
        #expect(space.read(0x800F, size: 1) == 0x1000 + 0xF * 16 + 1)
        #expect(space.mappings.map(\.owner) == ["a", "b", "c"])
    }

    @Test func unclaimedReadsAreAllOnesAndWritesVanish() {
        let space = AddressSpace(kind: .io)
        #expect(space.read(0x1234, size: 1) == 0xFF)
        #expect(space.read(0x1234, size: 2) == 0xFFFF)
        #expect(space.read(0x1234, size: 4) == 0xFFFF_FFFF)
        #expect(space.read(0x1234, size: 8) == UInt64.max)
        space.write(0x1234, size: 4, value: 0)
    }

    @Test func accessStraddlingTheEndOfAMappingIsUnclaimed() throws {
        let space = AddressSpace(kind: .memory)
        let a = ProbeHandler(), b = ProbeHandler()
        try space.map(0x1000 ..< 0x1004, owner: "a", handler: a)
        try space.map(0x1004 ..< 0x1008, owner: "b", handler: b)
        // Half in a, half in b: neither device may see a partial access.
        #expect(space.read(0x1002, size: 4) == 0xFFFF_FFFF)
        space.write(0x1006, size: 4, value: 1)
        #expect(a.count == 0 && b.count == 0)
        #expect(space.lookup(0x1004, size: 4) != nil)
        #expect(space.lookup(UInt64.max, size: 8) == nil)
    }

    @Test func overlapsAreRejectedAndUnmapFreesTheRange() throws {
        let space = AddressSpace(kind: .memory)
        let a = ProbeHandler()
        let id = try space.map(0x1000 ..< 0x2000, owner: "a", handler: a)
        #expect(throws: AddressSpaceError.overlap(new: "b", existing: "a", range: 0x1FFF ..< 0x3000)) {
            try space.map(0x1FFF ..< 0x3000, owner: "b", handler: ProbeHandler())
        }
        #expect(throws: AddressSpaceError.self) { try space.map(0x0 ..< 0x1001, owner: "c", handler: ProbeHandler()) }
        #expect(throws: AddressSpaceError.self) { try space.map(0x1100 ..< 0x1200, owner: "d", handler: ProbeHandler()) }
        #expect(throws: AddressSpaceError.empty("e")) { try space.map(0x5000 ..< 0x5000, owner: "e", handler: ProbeHandler()) }
        space.unmap(id)
        try space.map(0x1800 ..< 0x3000, owner: "b", handler: ProbeHandler())
        #expect(space.read(0x1000, size: 4) == 0xFFFF_FFFF)
    }

    @Test func manyMappingsBinarySearch() throws {
        let space = AddressSpace(kind: .memory)
        let handlers = (0 ..< 64).map { _ in ProbeHandler() }
        for (i, h) in handlers.enumerated().reversed() {
            try space.map(UInt64(i) * 0x100 ..< UInt64(i) * 0x100 + 0x80, owner: "h\(i)", handler: h)
        }
        for i in 0 ..< 64 {
            space.write(UInt64(i) * 0x100 + 0x7C, size: 4, value: UInt64(i))
            #expect(space.read(UInt64(i) * 0x100 + 0x80, size: 1) == 0xFF) // the gap after each
        }
        #expect(handlers.allSatisfy { $0.count == 1 })
    }

    @Test func oddSizedAccessesAreSplitIntoArchitecturalPieces() throws {
        let space = AddressSpace(kind: .memory)
        let a = ProbeHandler()
        try space.map(0x1000 ..< 0x1010, owner: "a", handler: a)
        // 3 bytes at 0x1001: a byte at 0x1001, then a word at 0x1002.
        space.write(0x1001, size: 3, value: 0xAABBCC)
        #expect(a.log.withLock { $0.map { "\($0.offset)/\($0.size)=\($0.value ?? 0)" } } == ["1/1=204", "2/2=43707"])
        // 7 bytes at 0x1000: 4 + 2 + 1, reassembled little-endian.
        let v = space.read(0x1000, size: 7)
        #expect(v == (0x1000 + 0 * 16 + 4) | (0x1000 + 4 * 16 + 2) << 32 | (0x1000 + 6 * 16 + 1) << 48)
        #expect(a.log.withLock { $0.dropFirst(2).map(\.size) } == [4, 2, 1])
        // Sizes outside 1...8 and accesses that wrap never reach a handler, and never trap.
        let before = a.count
        for size in [0, -1, 9, 16, Int.min] {
            _ = space.read(0x1000, size: size)
            space.write(0x1000, size: size, value: 0)
        }
        #expect(space.read(UInt64.max, size: 2) == 0xFFFF)
        space.write(UInt64.max - 2, size: 8, value: 0)
        #expect(a.count == before)
        #expect(space.lookup(0x1000, size: 0) == nil)
    }
}
