#if canImport(Glibc)
import Glibc
#endif
import VMMBlock
import VMMCore
import VMMTestKit

/// Collects completions from the loop thread; tests wait for them. A completion that ran
/// on the submitting thread (inline, on the "vCPU's" stack) is counted: the protocol forbids it.
final class Completions: @unchecked Sendable {
    private let condition = ThreadCondition()
    private var results: [Int: BlockResult] = [:]
    private(set) var inline = 0

    func handler(_ tag: Int) -> @Sendable (BlockResult) -> Void {
        let submitter = pthread_self()
        return { result in
            self.condition.withLock {
                if pthread_equal(submitter, pthread_self()) != 0 { self.inline += 1 }
                self.results[tag] = result
                self.condition.broadcast()
            }
        }
    }

    func wait(for tag: Int, seconds: Double = 5) -> BlockResult? {
        condition.withLock {
            _ = condition.wait(until: MonotonicDeadline(secondsFromNow: seconds)) { results[tag] != nil }
            return results[tag]
        }
    }

    /// Waits until `n` results arrived.
    func wait(count n: Int, seconds: Double = 5) -> Bool {
        condition.withLock { condition.wait(until: MonotonicDeadline(secondsFromNow: seconds)) { results.count >= n } }
    }

    func result(_ tag: Int) -> BlockResult? { condition.withLock { results[tag] } }
    var count: Int { condition.withLock { results.count } }
    var inlineCount: Int { condition.withLock { inline } }
}

/// Submits `request` and waits for its result (nil: refused or no answer in time).
func run(_ backend: BlockBackend, _ request: BlockRequest, seconds: Double = 5) -> BlockResult? {
    let c = Completions()
    guard backend.submit(request, completion: c.handler(0)) else { return nil }
    return c.wait(for: 0, seconds: seconds)
}

/// A page-aligned buffer standing in for guest memory.
final class GuestBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    init(count: Int, fill: UInt8 = 0) {
        bytes = .allocate(byteCount: count, alignment: 4096)
        bytes.initializeMemory(as: UInt8.self, repeating: fill)
    }
    deinit { bytes.deallocate() }

    /// Fills with a pattern that differs per position and per `seed`.
    func fillPattern(seed: UInt8) {
        for i in 0 ..< bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed) &+ i >> 9) }
    }

    var array: [UInt8] { Array(bytes) }
    var all: UnsafeRawBufferPointer { UnsafeRawBufferPointer(bytes) }

    /// Slices (not page aligned unless the offsets are) for scatter lists.
    func slice(_ range: Range<Int>) -> UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: bytes[range]) }
}

/// Reads `count` bytes at `offset` straight from a file.
func readFile(_ path: String, offset: Int, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var out = [UInt8](repeating: 0, count: count)
    let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    return n == count ? out : []
}

func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : -1
}
