#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import BenchSupport
import VMMNet
import VMMTestKit

/// `soak` (issue 8, load and backend faults): a virtio-net and an e1000 in one process,
/// each on its own real backend, driven at once for a fixed time. Each round the driver
/// thread sends a batch of ICMP echo requests from each NIC (a kernel on the other side
/// answers them) and reaps/re-posts the RX rings, then sleeps `--pause-us`, so the
/// process is a paced guest rather than a spinning benchmark. Whatever the peer sends
/// (echo replies, a flood) is received. Once a second it prints the totals and the
/// link state; at the end the accounting: frames the driver queued = frames the backend
/// sent + drops by reason; frames the backend read = frames delivered to the guest
/// rings. Tools/soak/run and Tools/soak/faults read the `SOAK …` lines.
struct Soak {
    struct NIC {
        let name: String
        let backend: NetworkBackend
        let send: (Int) -> Void
        let refill: () -> Void
        let delivered: () -> Int
        var queued = 0
    }

    let seconds: Double
    let batch: Int
    let pauseMicroseconds: Int
    let specs: [(device: RealBackendDatapath.Device, net: String, addressing: FrameAddressing)]

    func run() throws {
        let factory = RecordingFactory(realTimeBackends: true)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: factory)
        machine.loop.startThread(name: "soak-io")
        defer { machine.loop.stop() }
        var nics: [NIC] = []
        for spec in specs {
            let options = "mac=\(spec.addressing.deviceMAC.map { hex($0) }.joined(separator: ":")),net=\(spec.net)"
            let frame = Soak.echoRequest(spec.addressing)
            switch spec.device {
            case .virtioNet:
                let driver = try VirtioBenchDriver(machine: machine, options: options, features: VirtioBenchDriver.Feature.mac)
                let tx = try VirtioTransmitter(driver: driver, frame: frame, header: VirtioNetHeader(), linear: frame.count, batch: batch)
                let rx = try VirtioReceiver(driver: driver, bufferSize: 2048)
                guard let b = factory.backends.last else { throw BenchError.setup("no backend for \(spec.net)") }
                nics.append(NIC(name: "virtio-net", backend: b, send: tx.send, refill: rx.refill, delivered: { rx.delivered }))
            case .e1000:
                let driver = try E1000BenchDriver(machine: machine, options: options)
                let tx = try E1000Transmitter(driver: driver, frame: frame, tso: false, batch: batch)
                let rx = try E1000Receiver(driver: driver, jumbo: false)
                guard let b = factory.backends.last else { throw BenchError.setup("no backend for \(spec.net)") }
                nics.append(NIC(name: "e1000", backend: b, send: tx.send, refill: rx.refill, delivered: { rx.delivered }))
            }
        }
        print("SOAK pid \(getpid())")
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var nextReport = start + 1_000_000_000
        var lastProgress = nics.map { _ in (tx: 0, rx: 0) }
        var stalledSeconds = nics.map { _ in 0 }, quietSeconds = nics.map { _ in 0 }
        var pause = timespec(tv_sec: 0, tv_nsec: pauseMicroseconds * 1000)
        var now = start
        while now < end {
            for i in nics.indices {
                nics[i].send(batch)
                nics[i].queued += batch
                nics[i].refill()
            }
            nanosleep(&pause, nil)
            now = monotonicNanoseconds()
            if now >= nextReport {
                nextReport += 1_000_000_000
                var line = "SOAK t=\((now - start) / 1_000_000_000)"
                for (i, n) in nics.enumerated() {
                    let tx = Int(n.backend.counters.txFrames.load(ordering: .relaxed)), rx = n.delivered()
                    // A second in which an up link sent nothing is a stall; one with
                    // nothing received is only quiet (a switch port may hear nobody).
                    if n.backend.isLinkUp && tx == lastProgress[i].tx { stalledSeconds[i] += 1 }
                    if rx == lastProgress[i].rx { quietSeconds[i] += 1 }
                    lastProgress[i] = (tx, rx)
                    line += " \(n.name).link=\(n.backend.isLinkUp ? "up" : "down") \(n.name).tx=\(tx) \(n.name).rx=\(rx)"
                }
                print(line)
                fflush(nil)   // all streams: the script reads the lines live
            }
        }
        // Drain: keep reaping until nothing arrived for a second (at most 10 s), so the
        // peer's last frames are in the counts.
        var quietSince = monotonicNanoseconds()
        var lastDelivered = nics.map { $0.delivered() }
        let drainEnd = quietSince + 10_000_000_000
        while monotonicNanoseconds() - quietSince < 1_000_000_000 && monotonicNanoseconds() < drainEnd {
            for n in nics { n.refill() }
            let d = nics.map { $0.delivered() }
            if d != lastDelivered { lastDelivered = d; quietSince = monotonicNanoseconds() }
            nanosleep(&pause, nil)
        }
        for (i, n) in nics.enumerated() {
            let c = n.backend.counters
            let sent = Int(c.txFrames.load(ordering: .relaxed))
            let drops = c.allDrops.sorted { $0.key.rawValue < $1.key.rawValue }
            let dropped = drops.reduce(0) { $0 + Int($1.value) }
            let read = Int(c.rxFrames.load(ordering: .relaxed))
            let delivered = n.delivered()
            print("SOAK \(n.name) backend \(n.backend.description)")
            print("SOAK \(n.name) tx queued=\(n.queued) sent=\(sent) dropped=\(dropped) "
                + drops.map { "\($0.key.rawValue)=\($0.value)" }.joined(separator: " ")
                + " accounted=\(n.queued == sent + dropped ? "yes" : "NO")")
            print("SOAK \(n.name) rx backend-read=\(read) delivered=\(delivered) accounted=\(read == delivered ? "yes" : "NO")")
            print("SOAK \(n.name) tx-stalled-seconds=\(stalledSeconds[i]) rx-quiet-seconds=\(quietSeconds[i])")
        }
    }

    /// An ICMP echo request (RFC 792) of 98 bytes, as `ping` sends by default.
    static func echoRequest(_ a: FrameAddressing) -> [UInt8] {
        let data = (14 + 20 + 8 ..< 98).map { UInt8(truncatingIfNeeded: $0) }   // each byte its offset in the frame
        return a.flow(towardDevice: false).ipv4(proto: 1, id: 0, payload: FrameBuilder.icmpEchoRequest(id: 0x5357, seq: 1, data: data))
    }

    private func hex(_ b: UInt8) -> String {
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
}
