#if canImport(Glibc)
import Glibc
#endif
import DeviceCatalog
import Synchronization
import NetBackends
import VMMCore
import BenchSupport
import Sandbox
import VMMNet
import VMMTestKit

/// Suite 1b–d: a device on a real backend (tap, vde, user), driven for a fixed time.
/// TX: the driver pushes frames as fast as the device takes them (the backend's write
/// happens inside the kick or TDT write, on this thread); for the e1000 the time this
/// thread spends per TDT write, what a vCPU pays, is reported too. RX: something outside (the namespace's
/// kernel, a second switch port) produces frames; the backend's I/O loop thread hands
/// them to the device and this thread re-posts buffers, sleeping briefly between polls.
/// Prints frames/s, the figure Tools/bench/run divides by the raw C program's.
struct RealBackendDatapath {
    enum Device: String { case virtioNet = "virtio-net", e1000 }
    enum Direction: String { case tx, rx }

    let device: Device
    let direction: Direction
    let size: FrameSize
    let net: String
    let seconds: Double
    let addressing: FrameAddressing
    let key: String
    let sandbox: Sandbox.Mode

    func run() throws {
        let factory = RecordingFactory()
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: factory)
        // Confinement as `swiftvmm run` has it: the I/O loop enters its role when its
        // thread starts, this thread (which does what a vCPU does: doorbells, and on TX
        // the backend's writes) once the device is set up, right before the timed part.
        try Sandbox.activate(sandbox)
        machine.loop.startThread(name: "bench-io")
        defer { machine.loop.stop() }
        let options = "mac=\(addressing.deviceMAC.map { hex($0) }.joined(separator: ":")),net=\(net)"
        // Jumbo frames need the MTU offered to the guest; libslirp takes at most 1500.
        let mtu = net.hasPrefix("user") ? "" : ",mtu=9000"
        let frames: Int
        let elapsed: Double
        // The user backend hands each frame to libslirp on the I/O loop, later: wait for
        // the loop to catch up after every batch, so frames/s counts what slirp consumed.
        let settle: () -> Void = net.hasPrefix("user") ? { drain(machine.loop) } : {}
        switch (device, direction) {
        case (.virtioNet, .tx):
            let driver = try VirtioBenchDriver(machine: machine, options: options + mtu,
                                               features: InMemory.virtioFeatures(size, mergeable: true))
            let tx = try VirtioTransmitter(driver: driver, frame: frame(), header: size == .tso ? TSO.header : VirtioNetHeader(),
                                           linear: size == .tso ? 54 : size.length, batch: 32)
            (frames, elapsed) = timed { n in tx.send(n); settle(); return factory.backend?.acceptedFrames ?? 0 }
        case (.e1000, .tx):
            let driver = try E1000BenchDriver(machine: machine, options: options)
            let tx = try E1000Transmitter(driver: driver, frame: frame(), tso: size == .tso, batch: 32)
            tx.timesTailWrites = true
            (frames, elapsed) = timed { n in tx.send(n); settle(); return factory.backend?.acceptedFrames ?? 0 }
            let perWrite = Double(tx.tailWriteNanoseconds) / Double(max(1, tx.tailWrites))
            Report.value("\(key).tdt_ns", perWrite)
            Report.value("\(key).tdt_batch", Double(tx.batch))
            print("e1000 TDT write (\(tx.batch) packets each): \(Report.format(perWrite / 1000)) µs of this thread's time")
            if tx.stalled > 0 { print("(\(tx.stalled) batches dropped: the device finished no descriptor for 100 ms)") }
        case (.virtioNet, .rx):
            let driver = try VirtioBenchDriver(machine: machine, options: options + mtu,
                                               features: InMemory.virtioFeatures(size, mergeable: true))
            let rx = try VirtioReceiver(driver: driver, bufferSize: size.length > 1514 ? 4096 : 1536)
            let perFrame = (VirtioNetHeader.size + size.length + rx.bufferSize - 1) / rx.bufferSize
            (frames, elapsed) = polled { rx.refill(); return rx.delivered / perFrame }
        case (.e1000, .rx):
            let driver = try E1000BenchDriver(machine: machine, options: options)
            let rx = try E1000Receiver(driver: driver, jumbo: size.length > 1522)
            (frames, elapsed) = polled { rx.refill(); return rx.delivered }
        }
        if direction == .tx, let refused = factory.backend?.refusedFrames, refused > 0 {
            Report.value("\(key).refused", Double(refused))
            print("(the backend refused \(refused) frames: would-block or dropped; not counted)")
        }
        let fps = Double(frames) / elapsed
        Report.value("\(key).fps", fps)
        Report.value("\(key).gbps", fps * Double(size.length) * 8 / 1e9)
        print("\(device.rawValue) \(direction.rawValue) \(size.label) over \(net): \(Report.format(fps)) frames/s, \(Report.format(fps * Double(size.length) * 8 / 1e9)) Gbit/s")
    }

    private func frame() -> [UInt8] {
        addressing.frame(size, towardDevice: false)
    }

    /// Runs `body(batch)` (which returns the backend's running count of accepted frames)
    /// until `seconds` passed; returns the frames accepted meanwhile and the seconds.
    private func timed(_ body: (Int) -> Int) -> (Int, Double) {
        ThreadConfinement.enter(.vcpu)
        let before = body(0)
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var accepted = before
        var now = start
        while now < end {
            accepted = body(256)
            now = monotonicNanoseconds()
        }
        return (accepted - before, Double(now - start) / 1e9)
    }

    /// Polls `delivered` (a running count) every ~100 µs, as a guest's interrupt
    /// moderation paces its receive cleanup: Linux's e1000 holds a bulk receive to
    /// 4,000 interrupts/s (`e1000_update_itr`, bulk_latency: "250 usec"), virtio-net's
    /// NAPI polls 64 frames at a time. The rings outlast it: 256 e1000 descriptors, or
    /// 85 jumbo frames in virtio's 4 KiB buffers, last ≥ 280 µs at 300,000 frames/s.
    /// A 20 µs poll (before 2026-12-04) woke this thread 50,000 times a second on a
    /// two-core machine already running the producer and the I/O loop: the e1000's
    /// 9014 B receive rose from 243k to 283k frames/s (medians of 4) without it, the
    /// raw reader's 320k unchanged. Counts from the first frame on, so a producer that
    /// starts late is not charged to the device.
    private func polled(_ delivered: () -> Int) -> (Int, Double) {
        ThreadConfinement.enter(.vcpu)
        let deadline = monotonicNanoseconds() + UInt64((seconds + 5) * 1e9)
        var first: (count: Int, time: UInt64)?
        var pause = timespec(tv_sec: 0, tv_nsec: 100_000)
        while true {
            let count = delivered()
            let now = monotonicNanoseconds()
            if let f = first {
                if now - f.time >= UInt64(seconds * 1e9) { return (count - f.count, Double(now - f.time) / 1e9) }
            } else if count > 0 {
                first = (count, now)
            } else if now > deadline {
                return (0, 1)
            }
            nanosleep(&pause, nil)
        }
    }

    /// Returns once everything queued on `loop` before this call has run.
    private func drain(_ loop: EventLoop) {
        let done = Flag()
        loop.execute { done.set() }
        var pause = timespec(tv_sec: 0, tv_nsec: 10_000)
        while !done.isSet { nanosleep(&pause, nil) }
    }

    private func hex(_ b: UInt8) -> String {
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
}

final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
