#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import NetBackends
import VMMNet
import VMMTestKit

/// One in-memory workload, set up once (a test machine, a device, its rings) and then
/// run `n` operations at a time by the benchmark: `run(n)` is the measured part,
/// `failure()` says afterwards whether the device really did the work (every ring
/// consumed, every frame taken), so a broken device cannot look fast.
package struct Workload {
    package let run: (Int) -> Void
    package let failure: () -> String?

    package init(run: @escaping (Int) -> Void, failure: @escaping () -> String? = { nil }) {
        self.run = run
        self.failure = failure
    }
}

/// The workloads of the in-memory datapath and micro-benchmarks (Benchmarks/Benchmarks/
/// SwiftVMMBenchmarks): the devices driven through VMMTestKit — real guest memory, the
/// real PCI bus and address-space dispatch — against a backend that only counts
/// (`SinkEndpoint`), so what is timed is the device's own cost per frame.
package enum InMemory {
    /// Capabilities of the sink the devices send to: like TAP (header, offloads), or bare.
    package static let tapLike = BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN], maxFrameSize: 65_535)
    package static let bare = BackendCapabilities(virtioNetHeader: false, offloads: [], maxFrameSize: 65_535)
    package static let addressing = FrameAddressing()
    /// `frame`'s bytes where TAP's read loop leaves a received frame: after the 12-byte
    /// vnet header at the start of a 64-byte-aligned read slot (`TapBackend.readSlot`),
    /// 12 bytes past a cache line. Where the source lies against the guest's buffer is
    /// part of the receive copy's cost (a frame 12 bytes into a cache-line-aligned
    /// buffer, as virtio-net's header puts it, copies from there without split loads).
    /// Kept for the workload's life.
    static func received(_ frame: [UInt8]) -> UnsafeRawBufferPointer {
        let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioNetHeader.size + frame.count, alignment: 64)
        let bytes = UnsafeMutableRawBufferPointer(rebasing: slot[VirtioNetHeader.size...])
        bytes.copyBytes(from: frame)
        return UnsafeRawBufferPointer(bytes)
    }

    /// What TAP's read loop hands the device at once for `frame` (64 standard frames, 22
    /// of 9014 bytes, 4 of 64 KiB: `TapBackend.framesPerDelivery`), kept for the
    /// workload's life (as its bytes are).
    static func delivery(of frame: ReceivedFrame) -> UnsafeMutableBufferPointer<ReceivedFrame> {
        let count = TapBackend.framesPerDelivery(frameLength: frame.bytes.count)
        let frames = UnsafeMutableBufferPointer<ReceivedFrame>.allocate(capacity: count)
        frames.initialize(repeating: frame)
        return frames
    }

    package static func frame(_ size: FrameSize, towardDevice: Bool) -> [UInt8] {
        addressing.frame(size, towardDevice: towardDevice)
    }

    package static func virtioFeatures(_ size: FrameSize, mergeable: Bool) -> UInt64 {
        typealias F = VirtioBenchDriver.Feature
        var f = F.mac | F.csum | F.hostTSO4 | F.guestCsum
        if size == .tso { f |= F.guestTSO4 }
        if mergeable { f |= F.mrgRxbuf }
        return f
    }

    // MARK: Floor

    /// One memcpy of the frame between two cached buffers per op: the floor any
    /// copy-once device pays, the limit the datapath is judged against.
    package static func memcpyFloor(_ size: FrameSize) -> Workload {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size.length, alignment: 64)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: size.length, alignment: 64)
        for i in 0 ..< size.length { source[i] = UInt8(truncatingIfNeeded: i) }
        // Lives as long as the benchmark process; never freed.
        return Workload { n in
            for _ in 0 ..< n {
                memcpy(destination.baseAddress!, source.baseAddress!, size.length)
                opaque(destination.baseAddress)
            }
        }
    }

    // MARK: virtio-net

    /// Linux's virtio_net TX: 64 chains published per kick, the used ring reaped.
    /// `caps: bare` makes the device segment a TSO send itself (backend without offloads).
    package static func virtioTransmit(_ size: FrameSize, caps: BackendCapabilities = tapLike) throws -> Workload {
        let sink = SinkEndpoint(capabilities: caps)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56,mtu=9000",
                                           features: virtioFeatures(size, mergeable: true))
        let tx = try VirtioTransmitter(driver: driver, frame: frame(size, towardDevice: false),
                                       header: size == .tso ? TSO.header : VirtioNetHeader(),
                                       linear: size == .tso ? 54 : size.length)
        tx.settle = { machine.runQueuedWork() }
        return Workload(run: { n in withExtendedLifetime(machine) { tx.send(n) } }, failure: {
            tx.incomplete == 0 && sink.framesSent > 0 ? nil : "virtio-net TX \(size.key): device did not consume the ring (\(tx.incomplete) incomplete)"
        })
    }

    /// RX: frames injected from the backend side in deliveries of what TAP's read loop
    /// hands over per readiness event (`delivery(of:)`), buffers re-posted per batch (half
    /// a ring's worth), with or without MRG_RXBUF.
    package static func virtioReceive(_ size: FrameSize, mergeable: Bool) throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56,mtu=9000",
                                           features: virtioFeatures(size, mergeable: mergeable))
        // Linux: mergeable buffers are ~1.5 KiB (up to a page for big packets); without
        // MRG_RXBUF each buffer holds a whole frame ("small"/"big" packets).
        let bufferSize = mergeable ? (size.length > 1514 ? 4096 : 1536) : VirtioNetHeader.size + size.length
        let rx = try VirtioReceiver(driver: driver, bufferSize: bufferSize)
        let bytes = received(frame(size, towardDevice: true))
        let header: VirtioNetHeader? = size == .tso ? TSO.header : VirtioNetHeader()
        let delivery = delivery(of: ReceivedFrame(bytes, header: header))
        let perRound = max(1, driver.rx.size / max(1, (VirtioNetHeader.size + size.length + bufferSize - 1) / bufferSize) / 2)
        var refused = 0
        return Workload(run: { n in
            withExtendedLifetime(machine) {
                var done = 0
                while done < n {
                    let b = min(perRound, n - done)
                    var injected = 0
                    while injected < b {
                        let burst = min(delivery.count, b - injected)
                        refused += burst - sink.inject(UnsafeBufferPointer(rebasing: delivery[0 ..< burst]))
                        injected += burst
                    }
                    rx.refill()
                    done += b
                }
            }
        }, failure: {
            refused == 0 && rx.delivered > 0 ? nil : "virtio-net RX \(size.key): \(refused) frames refused, \(rx.delivered) delivered"
        })
    }

    // MARK: e1000

    /// Linux's e1000 TX: each packet's descriptors written fresh, TDT moved once per 64.
    package static func e1000Transmit(_ size: FrameSize) throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let tx = try E1000Transmitter(driver: driver, frame: frame(size, towardDevice: false), tso: size == .tso)
        tx.settle = { machine.runQueuedWork() }
        return Workload(run: { n in withExtendedLifetime(machine) { tx.send(n) } }, failure: {
            tx.incomplete == 0 && sink.framesSent > 0 ? nil : "e1000 TX \(size.key): descriptors not done (\(tx.incomplete))"
        })
    }

    /// RX: frames injected from the backend side in deliveries as TAP's read loop hands
    /// them over (`delivery(of:)`; the device takes its lock once per delivery), RDT moved
    /// once per delivery.
    package static func e1000Receive(_ size: FrameSize) throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let rx = try E1000Receiver(driver: driver, jumbo: size.length > 1522)
        let bytes = received(frame(size, towardDevice: true))
        let delivery = delivery(of: ReceivedFrame(bytes, header: nil))
        var refused = 0
        return Workload(run: { n in
            withExtendedLifetime(machine) {
                var done = 0
                while done < n {
                    let b = min(delivery.count, n - done)
                    refused += b - sink.inject(UnsafeBufferPointer(rebasing: delivery[0 ..< b]))
                    rx.refill()
                    done += b
                }
            }
        }, failure: {
            refused == 0 && rx.delivered > 0 ? nil : "e1000 RX \(size.key): \(refused) frames refused, \(rx.delivered) delivered"
        })
    }

    // MARK: Micro

    /// A 32-bit MMIO read or write through AddressSpace dispatch into the device (what
    /// every KVM MMIO exit does after the exit itself): e1000 STATUS / LEDCTL.
    package static func barAccess(write: Bool) throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let nic = driver.nic
        if write {
            return Workload { n in
                withExtendedLifetime(machine) {
                    for i in 0 ..< n { nic.write32(bar: 0, offset: 0xE00, UInt32(truncatingIfNeeded: i)) }
                }
            }
        }
        return Workload { n in
            withExtendedLifetime(machine) {
                var x: UInt32 = 0
                for _ in 0 ..< n { x &+= nic.read32(bar: 0, offset: 0x8) }
                opaque(UnsafeMutableRawPointer(bitPattern: UInt(x) | 1))
            }
        }
    }

    /// One virtqueue TX round: a single 64-byte chain per kick.
    package static func virtqueueTransmitRound() throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56",
                                           features: virtioFeatures(.small, mergeable: true))
        let tx = try VirtioTransmitter(driver: driver, frame: frame(.small, towardDevice: false),
                                       header: VirtioNetHeader(), linear: 64, batch: 1)
        return Workload(run: { n in withExtendedLifetime(machine) { tx.send(n) } }, failure: {
            tx.incomplete == 0 && sink.framesSent > 0 ? nil : "virtqueue TX round: \(tx.incomplete) incomplete"
        })
    }

    /// One virtqueue RX round: one 1514-byte frame and a refill per frame.
    package static func virtqueueReceiveRound(mergeable: Bool) throws -> Workload {
        let sink = SinkEndpoint(capabilities: tapLike)
        let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56",
                                           features: virtioFeatures(.mtu, mergeable: mergeable))
        let rx = try VirtioReceiver(driver: driver, bufferSize: mergeable ? 1536 : 1526)
        let bytes = received(frame(.mtu, towardDevice: true))
        var refused = 0
        return Workload(run: { n in
            withExtendedLifetime(machine) {
                for _ in 0 ..< n {
                    if !sink.inject(bytes, header: VirtioNetHeader()) { refused += 1 }
                    rx.refill()
                }
            }
        }, failure: {
            refused == 0 && rx.delivered > 0 ? nil : "virtqueue RX round: \(refused) refused, \(rx.delivered) delivered"
        })
    }

    /// The Internet checksum over `length` bytes.
    package static func checksum(_ length: Int) -> Workload {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 64)
        for i in 0 ..< length { bytes[i] = UInt8(truncatingIfNeeded: i &* 7) }
        let view = UnsafeRawBufferPointer(bytes)
        return Workload { n in
            var sum: UInt16 = 0
            // The buffer goes through `opaqueValue` each call: the checksum of an unchanged
            // buffer is loop-invariant, and the optimizer would compute it once.
            for _ in 0 ..< n { sum ^= InternetChecksum.checksum(opaqueValue(view)) }
            opaque(UnsafeMutableRawPointer(bitPattern: UInt(sum) | 1))
        }
    }

    /// The capture filter's cost per 1514-byte frame: formatting a pcap record into the
    /// writer's buffer plus its share of the write(2) when the buffer fills — to
    /// /dev/null (the writer alone) or to a tmpfs file (the kernel's page allocation
    /// included; the file is truncated now and then to stay small, and removed by the
    /// benchmark's teardown). PcapWriter takes regular files only, so for /dev/null it
    /// opens a file and its descriptor is then pointed at /dev/null (`dup2`).
    package static func capture(toFile: Bool) throws -> Workload {
        let path = toFile ? pcapFile : pcapFile + ".null"
        let writer = try PcapWriter(path: path)
        if !toFile {
            guard let fd = descriptor(of: path) else { throw BenchError.setup("no descriptor open on \(path)") }
            let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
            guard null >= 0, dup2(null, fd) == fd else { throw BenchError.setup("cannot point the pcap writer at /dev/null") }
            close(null)
            unlink(path)
        }
        let bytes = UnsafeRawBufferPointer(copying: frame(.mtu, towardDevice: false))
        let segments = [bytes]
        var rounds = 0
        return Workload { n in
            withExtendedLifetime(writer) {
                for _ in 0 ..< n { writer.write(segments) }
            }
            rounds += 1
            if toFile, rounds % 16 == 0 { _ = truncate(path, 0) }
        }
    }

    /// The descriptor this process has open on `path` (from /proc/self/fd).
    private static func descriptor(of path: String) -> Int32? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var target = [CChar](repeating: 0, count: 4096)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let fd = Int32(name) else { continue }
            let n = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
            guard n > 0 else { continue }
            target[n] = 0
            if String(cString: target) == path { return fd }
        }
        return nil
    }

    /// Where `capture(toFile: true)` writes: tmpfs when there is one.
    package static let pcapFile = "\(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")/swiftvmm-bench-\(getpid()).pcap"
}

/// Keeps the optimizer from deleting a measured store.
@inline(never) package func opaque(_ p: UnsafeMutableRawPointer?) { _ = p }

/// Returns `x` without the optimizer knowing it is `x` (not optimized, never inlined).
@_optimize(none) @inline(never) package func opaqueValue<T>(_ x: T) -> T { x }

extension UnsafeRawBufferPointer {
    /// A copy of `bytes` that lives as long as the process (a benchmark's fixed frame).
    init(copying bytes: [UInt8]) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        self.init(buffer)
    }
}
