#if canImport(DeviceCatalog)
import DeviceCatalog
import Testing
import QTest
import VMMCore

/// A qtest machine with a real backend from the catalog's `net=` factory: the backend runs on
/// the I/O thread while device time stays virtual.
@Suite struct RealBackendTests {
    @Test(.enabled(if: (try? DeviceCatalog.registry.lookup("e1000")) != nil, "needs e1000 in DeviceCatalog.registry"))
    func userModeBackendWithVirtualTime() throws {
        let machine = try QTestMachine(devices: ["e1000,slot=4,net=user"], registry: DeviceCatalog.registry,
                                       services: DeviceCatalog.makeServices())
        defer { machine.shutdown() }
        let lines = Lines()
        let server = QTestServer(machine: machine) { lines.append($0) }
        for request in ["outl 0xcf8 0x80002000", "inl 0xcfc", "clock_step 1000000", "clock_set 5000000"] {
            server.handle(line: Substring(request))
        }
        #expect(lines.all == ["OK\n", "OK 0x100e8086\n", "OK 1000000\n", "OK 5000000\n"])
        #expect(machine.clock.now == 5_000_000)
    }

    @Test func unknownBackendIsAnOptionError() {
        #expect(throws: (any Error).self) {
            try QTestMachine(devices: ["e1000,slot=4,net=carrier-pigeon"], registry: DeviceCatalog.registry,
                             services: DeviceCatalog.makeServices())
        }
    }
}

import Synchronization

final class Lines: Sendable {
    private let items = Mutex<[String]>([])
    func append(_ s: String) { items.withLock { $0.append(s) } }
    var all: [String] { items.withLock { $0 } }
}
#endif
