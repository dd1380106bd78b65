#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMMCore

/// The wait every peer-serving thread makes: for its descriptor, unless the stop comes first.
@Suite struct StoppableWaitTests {
    @Test func readyTimedOutAndStopped() throws {
        var data: [Int32] = [0, 0], stop: [Int32] = [0, 0]
        #expect(pipe(&data) == 0 && pipe(&stop) == 0)
        defer { for fd in data + stop { close(fd) } }
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0], milliseconds: 0) == .timedOut)
        #expect(StoppableWait.wait(data[1], for: Int16(POLLOUT), orStop: -1) == .ready)
        #expect(write(data[1], "x", 1) == 1)
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0]) == .ready)
        #expect(write(stop[1], "x", 1) == 1)
        // A stop wins over a descriptor that is ready too.
        #expect(StoppableWait.wait(data[0], for: Int16(POLLIN), orStop: stop[0]) == .stopped)
        #expect(StoppableWait.wait(-1, for: 0, orStop: stop[0], milliseconds: 0) == .stopped)
    }
}
