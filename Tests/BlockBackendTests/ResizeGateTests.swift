import Foundation
@testable import BlockBackends
import Testing

/// A `block_resize` waits for the writes already checked against the old size, and
/// writes that come while it waits go after it (FileBackend's ResizeGate).
@Suite struct ResizeGateTests {
    /// What the threads did, in order.
    final class Events: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func append(_ event: String) { lock.withLock { list.append(event) } }
        var all: [String] { lock.withLock { list } }
    }

    /// A write that has entered the gate and stays inside until `finish` is signalled.
    private struct HeldWrite {
        let finish = DispatchSemaphore(value: 0)
        let done = DispatchGroup()

        init(_ gate: ResizeGate, events: Events? = nil) {
            let inside = DispatchSemaphore(value: 0)
            let finish = finish
            DispatchQueue.global().async(group: done) {
                gate.write {
                    events?.append("write 1 checked")
                    inside.signal()
                    finish.wait()
                    events?.append("write 1 written")
                }
            }
            inside.wait()
        }
    }

    @Test func aResizeWaitsForTheWriteInsideAndHoldsLaterOnesBack() {
        let gate = ResizeGate()
        let events = Events()
        let held = HeldWrite(gate, events: events)
        DispatchQueue.global().async(group: held.done) {
            _ = gate.resize(waitingAtMost: 10) { events.append("resized") }
        }
        usleep(100_000)   // the resize is waiting at the gate now
        DispatchQueue.global().async(group: held.done) {
            gate.write { events.append("write 2 checked") }
        }
        usleep(100_000)
        #expect(events.all == ["write 1 checked"])
        held.finish.signal()
        #expect(held.done.wait(timeout: .now() + 10) == .success)
        #expect(events.all == ["write 1 checked", "write 1 written", "resized", "write 2 checked"])
    }

    /// A write that never finishes (a hung NFS server) does not hang the resize, which runs
    /// on the QMP thread: it gives up, changes nothing, and leaves the gate open.
    @Test func aResizeGivesUpOnAWriteThatDoesNotFinish() {
        let gate = ResizeGate()
        let held = HeldWrite(gate)
        var ran = false
        #expect(gate.resize(waitingAtMost: 0.2) { ran = true } == nil)
        #expect(!ran)
        var second = false
        gate.write { second = true }   // the gate is open again
        #expect(second)
        held.finish.signal()
        #expect(held.done.wait(timeout: .now() + 10) == .success)
    }

    /// The second write enters while the first is still inside: the first waits for it.
    @Test func writesPassTogether() {
        let gate = ResizeGate()
        let events = Events()
        let secondInside = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        DispatchQueue.global().async(group: done) {
            gate.write {
                let saw = secondInside.wait(timeout: .now() + 10) == .success
                events.append(saw ? "first saw the second inside" : "first alone")
            }
        }
        DispatchQueue.global().async(group: done) {
            gate.write { _ = secondInside.signal() }
        }
        #expect(done.wait(timeout: .now() + 20) == .success)
        #expect(events.all == ["first saw the second inside"])
    }
}
