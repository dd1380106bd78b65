import VMMCore

/// An I/O loop on its own thread for one test (real backends and block devices complete
/// from it), stopped when the test lets go of it.
public final class RunningLoop {
    public let loop: EPollEventLoop
    public init() throws {
        loop = try EPollEventLoop()
        loop.startThread(name: "test-io")
    }
    deinit { loop.stop() }
}
