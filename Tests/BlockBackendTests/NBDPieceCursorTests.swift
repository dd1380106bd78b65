@testable import BlockBackends
import Testing
import VMMBlock

/// How a request becomes NBD commands, without a server.
struct NBDPieceCursorTests {
    private func drain(_ request: BlockRequest, maxPayload: Int) -> [(count: UInt64, offset: UInt64)] {
        var cursor = NBDPieceCursor(request)
        var out: [(UInt64, UInt64)] = []
        while let piece = cursor.next(maxPayload: maxPayload) {
            switch piece {
            case let .read(_, count, offset), let .write(_, count, offset): out.append((UInt64(count), offset))
            case let .trim(count, offset), let .zero(count, offset, _): out.append((count, offset))
            case .flush: out.append((0, 0))
            }
        }
        #expect(cursor.isFinished)
        return out
    }

    @Test func aScatterListIsSplitAtThePayloadLimitAndSkipsEmptySegments() {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 12288, alignment: 4096)
        defer { memory.deallocate() }
        let segments = [UnsafeRawBufferPointer(rebasing: memory[0 ..< 5000]), UnsafeRawBufferPointer(rebasing: memory[5000 ..< 5000]),
                        UnsafeRawBufferPointer(rebasing: memory[5000 ..< 12288])]
        let pieces = drain(.write(offset: 1 << 20, from: segments), maxPayload: 4096)
        #expect(pieces.map(\.count) == [4096, 904, 4096, 3192])
        let base: UInt64 = 1 << 20
        let offsets: [UInt64] = [base, base + 4096, base + 5000, base + 9096]
        #expect(pieces.map(\.offset) == offsets)
    }

    @Test func rangesAreSplitAtAGibibyteAndRewindStartsOver() {
        let request = BlockRequest.discard(offset: 512, length: (5 << 29) + 7)
        #expect(drain(request, maxPayload: 4096).map(\.count) == [1 << 30, 1 << 30, (1 << 29) + 7])
        var cursor = NBDPieceCursor(request)
        _ = cursor.next(maxPayload: 4096)
        cursor.rewind()
        guard case let .trim(count, offset) = cursor.next(maxPayload: 4096) else { Issue.record("not a trim"); return }
        #expect(count == 1 << 30 && offset == 512)
        cursor.abandon()
        #expect(cursor.next(maxPayload: 4096) == nil)
    }

    @Test func overflowingRangesAreMalformedAndIssueNothing() {
        for request in [BlockRequest.writeZeroes(offset: .max - 10, length: 11, mayUnmap: false),
                        .discard(offset: 1, length: .max),
                        .read(offset: UInt64(Int64.max), into: [UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: 4096), count: 1)])] {
            var cursor = NBDPieceCursor(request)
            #expect(cursor.isMalformed)
            #expect(cursor.next(maxPayload: 4096) == nil)
        }
        #expect(drain(.flush, maxPayload: 4096).count == 1)
        #expect(drain(.read(offset: 0, into: []), maxPayload: 4096).isEmpty)
    }
}
