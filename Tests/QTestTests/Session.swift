import Synchronization
import QTest
import VMMCore

/// A qtest session with the server in-process: each request returns its response line;
/// asynchronous `IRQ …` lines are collected apart, as libqtest does.
final class Session: Sendable {
    let machine: QTestMachine
    let server: QTestServer
    private let output = Output()

    /// Lines the server sent (a class so the server's output closure can hold it).
    final class Output: Sendable {
        let lines = Mutex<[String]>([])
    }

    init(devices: [String] = [], registry: PCIDeviceRegistry = PCIDeviceRegistry([TickerDevice.self])) throws {
        machine = try QTestMachine(devices: devices, registry: registry)
        let output = self.output
        server = QTestServer(machine: machine) { text in output.lines.withLock { $0.append(text) } }
    }

    deinit { machine.shutdown() }

    /// Sends one request; returns its response (the one non-IRQ line it produced).
    @discardableResult
    func ask(_ request: String) -> String {
        let before = output.lines.withLock { $0.count }
        server.handle(line: Substring(request))
        return output.lines.withLock { all in
            all[before...].last { !$0.hasPrefix("IRQ ") }.map { String($0.dropLast()) } ?? "<no response>"
        }
    }

    /// Every asynchronous line so far, without newlines.
    var asyncLines: [String] { output.lines.withLock { $0.filter { $0.hasPrefix("IRQ ") }.map { String($0.dropLast()) } } }
}
