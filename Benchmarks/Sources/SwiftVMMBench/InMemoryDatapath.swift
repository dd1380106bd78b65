#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import VMMNet
import VMMTestKit

/// Suite 1a: the devices' own cost per frame, against an in-memory sink/source, next to
/// one memcpy of the same frame measured in the same run (the floor any copy-once
/// device pays).
struct InMemoryDatapath {
    let harness: Harness
    let addressing = FrameAddressing()
    /// Runs only results whose key contains this (for profiling one path).
    var only: String? = nil
    /// Capabilities of the sink the devices send to: like TAP (header, offloads), or bare.
    static let tapLike = BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN], maxFrameSize: 65_535)
    static let bare = BackendCapabilities(virtioNetHeader: false, offloads: [], maxFrameSize: 65_535)

    func run() throws {
        print("== in-memory datapath (device cost, no backend I/O) ==")
        for size in FrameSize.allCases {
            try report("mem.memcpy.\(size.key)") { memcpyCost(size) }
        }
        for size in FrameSize.allCases {
            try report("mem.virtio.tx.\(size.key)") { try virtioTransmit(size, caps: InMemoryDatapath.tapLike) }
        }
        try report("mem.virtio.tx.tso64k-sw") { try virtioTransmit(.tso, caps: InMemoryDatapath.bare) }
        for size in FrameSize.allCases {
            try report("mem.virtio.rx.\(size.key)") { try virtioReceive(size, mergeable: false) }
            try report("mem.virtio.rx-mrg.\(size.key)") { try virtioReceive(size, mergeable: true) }
        }
        for size in FrameSize.allCases {
            try report("mem.e1000.tx.\(size.key)") { try e1000Transmit(size) }
        }
        for size in [FrameSize.small, .mtu, .jumbo] {
            try report("mem.e1000.rx.\(size.key)") { try e1000Receive(size) }
        }
    }

    private func report(_ key: String, _ measure: () throws -> Measurement) throws {
        if let only, !key.contains(only) { return }
        let m = try measure()
        Report.emit(m, key: key)
        print(line(m))
    }

    func line(_ m: Measurement) -> String {
        "\(m.name): \(Report.format(m.nanosecondsPerOp)) ns/frame, \(Report.format(m.gigabitsPerSecond)) Gbit/s, \(Report.format(m.allocationsPerOp)) allocations/frame\(m.note.isEmpty ? "" : " (\(m.note))")"
    }

    // MARK: Floor

    func memcpyCost(_ size: FrameSize) -> Measurement {
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size.length, alignment: 64)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: size.length, alignment: 64)
        defer { source.deallocate(); destination.deallocate() }
        for i in 0 ..< size.length { source[i] = UInt8(truncatingIfNeeded: i) }
        return harness.measure("memcpy \(size.label)", bytes: size.length) { n in
            for _ in 0 ..< n {
                memcpy(destination.baseAddress!, source.baseAddress!, size.length)
                blackHole(destination.baseAddress)
            }
        }
    }

    // MARK: virtio-net

    func frame(_ size: FrameSize, towardDevice: Bool) -> [UInt8] {
        addressing.frame(size, towardDevice: towardDevice)
    }

    static func virtioFeatures(_ size: FrameSize, mergeable: Bool) -> UInt64 {
        typealias F = VirtioBenchDriver.Feature
        var f = F.mac | F.csum | F.hostTSO4 | F.guestCsum
        if size == .tso { f |= F.guestTSO4 }
        if mergeable { f |= F.mrgRxbuf }
        return f
    }

    func virtioTransmit(_ size: FrameSize, caps: BackendCapabilities) throws -> Measurement {
        let sink = SinkEndpoint(capabilities: caps)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56,mtu=9000",
                                           features: InMemoryDatapath.virtioFeatures(size, mergeable: true))
        let header = size == .tso ? TSO.header : VirtioNetHeader()
        let tx = try VirtioTransmitter(driver: driver, frame: frame(size, towardDevice: false), header: header,
                                       linear: size == .tso ? 54 : size.length)
        let software = !caps.virtioNetHeader && size == .tso
        let m = harness.measure("virtio-net TX \(size.label)\(software ? " segmented in software" : "")", bytes: size.length,
                                note: size == .tso ? "\(tx.descriptorsPerChain) descriptors per send" : "") { n in tx.send(n) }
        try check(tx.incomplete == 0 && sink.framesSent > 0, "virtio-net TX \(size.key): device did not consume the ring (\(tx.incomplete) incomplete)")
        return m
    }

    func virtioReceive(_ size: FrameSize, mergeable: Bool) throws -> Measurement {
        let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56,mtu=9000",
                                           features: InMemoryDatapath.virtioFeatures(size, mergeable: mergeable))
        // Linux: mergeable buffers are ~1.5 KiB (up to a page for big packets); without
        // MRG_RXBUF each buffer holds a whole frame ("small"/"big" packets).
        let bufferSize = mergeable ? (size.length > 1514 ? 4096 : 1536) : VirtioNetHeader.size + size.length
        let rx = try VirtioReceiver(driver: driver, bufferSize: bufferSize)
        let bytes = frame(size, towardDevice: true)
        let header: VirtioNetHeader? = size == .tso ? TSO.header : VirtioNetHeader()
        let perRound = max(1, driver.rx.size / max(1, (VirtioNetHeader.size + size.length + bufferSize - 1) / bufferSize) / 2)
        var refused = 0
        let m = bytes.withUnsafeBytes { frame in
            harness.measure("virtio-net RX \(size.label)\(mergeable ? " MRG_RXBUF" : "")", bytes: size.length) { n in
                var done = 0
                while done < n {
                    let b = min(perRound, n - done)
                    for _ in 0 ..< b where !sink.inject(frame, header: header) { refused += 1 }
                    rx.refill()
                    done += b
                }
            }
        }
        try check(refused == 0 && rx.delivered > 0, "virtio-net RX \(size.key): \(refused) frames refused, \(rx.delivered) delivered")
        return m
    }

    // MARK: e1000

    func e1000Transmit(_ size: FrameSize) throws -> Measurement {
        let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let tx = try E1000Transmitter(driver: driver, frame: frame(size, towardDevice: false), tso: size == .tso)
        let m = harness.measure("e1000 TX \(size.label)", bytes: size.length,
                                note: size == .tso ? "\(tx.descriptorsPerPacket) descriptors, segmented in the device" : "") { n in tx.send(n) }
        try check(tx.incomplete == 0 && sink.framesSent > 0, "e1000 TX \(size.key): descriptors not done (\(tx.incomplete))")
        return m
    }

    func e1000Receive(_ size: FrameSize) throws -> Measurement {
        let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
        let machine = try TestMachine(memorySize: 256 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let rx = try E1000Receiver(driver: driver, jumbo: size.length > 1522)
        let bytes = frame(size, towardDevice: true)
        var refused = 0
        let m = bytes.withUnsafeBytes { frame in
            harness.measure("e1000 RX \(size.label)", bytes: size.length) { n in
                var done = 0
                while done < n {
                    let b = min(64, n - done)
                    for _ in 0 ..< b where !sink.inject(frame, header: nil) { refused += 1 }
                    rx.refill()
                    done += b
                }
            }
        }
        try check(refused == 0 && rx.delivered > 0, "e1000 RX \(size.key): \(refused) frames refused, \(rx.delivered) delivered")
        return m
    }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw BenchError.setup(message()) }
}

/// Keeps the optimizer from deleting a measured store.
@inline(never) func blackHole(_ p: UnsafeMutableRawPointer?) { _ = p }
