#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import VMMNet
import VMMTestKit

/// Suite 2: the hot paths one at a time.
struct Micro {
    let harness: Harness
    let datapath: InMemoryDatapath

    func run() throws {
        print("== micro-benchmarks ==")
        try barAccess()
        try e1000Descriptors()
        try virtqueueRounds()
        checksums()
        try capture()
    }

    private func report(_ m: Measurement, key: String, unit: String = "op") {
        Report.emit(m, key: key)
        print("\(m.name): \(Report.format(m.nanosecondsPerOp)) ns/\(unit), \(Report.format(m.allocationsPerOp)) allocations/\(unit)")
    }

    /// A 32-bit MMIO read and write through AddressSpace dispatch into the device (what
    /// every KVM MMIO exit does after the exit itself).
    func barAccess() throws {
        let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
        let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
        let driver = try E1000BenchDriver(machine: machine, options: "mac=52:54:00:12:34:56")
        let nic = driver.nic
        report(harness.measure("BAR read (e1000 STATUS via the bus)") { n in
            var x: UInt32 = 0
            for _ in 0 ..< n { x &+= nic.read32(bar: 0, offset: 0x8) }
            blackHole(UnsafeMutableRawPointer(bitPattern: UInt(x) | 1))
        }, key: "micro.bar.read")
        report(harness.measure("BAR write (e1000 LEDCTL via the bus)") { n in
            for i in 0 ..< n { nic.write32(bar: 0, offset: 0xE00, UInt32(truncatingIfNeeded: i)) }
        }, key: "micro.bar.write")
    }

    /// One E1000 TX descriptor: a legacy 1514-byte packet, and per descriptor of a TSO send.
    func e1000Descriptors() throws {
        let legacy = try datapath.e1000Transmit(.mtu)
        report(Measurement(name: "e1000 TX descriptor, legacy 1514 B", nanosecondsPerOp: legacy.nanosecondsPerOp,
                           bytesPerOp: 0, allocationsPerOp: legacy.allocationsPerOp), key: "micro.e1000.txd.legacy", unit: "descriptor")
        let tso = try datapath.e1000Transmit(.tso)
        let descriptors = Double((TSO.frameLength + 4095) / 4096 + 1)
        report(Measurement(name: "e1000 TX descriptor, TSO (64 KiB send / \(Int(descriptors)) descriptors)",
                           nanosecondsPerOp: tso.nanosecondsPerOp / descriptors, bytesPerOp: 0,
                           allocationsPerOp: tso.allocationsPerOp / descriptors), key: "micro.e1000.txd.tso", unit: "descriptor")
    }

    /// One virtqueue round: a single 64-byte frame per kick (TX), or one frame and a
    /// refill per frame (RX), with and without MRG_RXBUF.
    func virtqueueRounds() throws {
        let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
        let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
        let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56",
                                           features: InMemoryDatapath.virtioFeatures(.small, mergeable: true))
        let tx = try VirtioTransmitter(driver: driver, frame: datapath.frame(.small, towardDevice: false),
                                       header: VirtioNetHeader(), linear: 64, batch: 1)
        report(harness.measure("virtqueue TX round (1 chain, 1 kick, 64 B)") { n in tx.send(n) }, key: "micro.vq.tx", unit: "round")
        for mergeable in [false, true] {
            let sink = SinkEndpoint(capabilities: InMemoryDatapath.tapLike)
            let machine = try TestMachine(memorySize: 64 << 20, networkFactory: SinkFactory(sink))
            let driver = try VirtioBenchDriver(machine: machine, options: "mac=52:54:00:12:34:56",
                                               features: InMemoryDatapath.virtioFeatures(.mtu, mergeable: mergeable))
            let rx = try VirtioReceiver(driver: driver, bufferSize: mergeable ? 1536 : 1526)
            let frame = datapath.frame(.mtu, towardDevice: true)
            let m = frame.withUnsafeBytes { f in
                harness.measure("virtqueue RX round (1514 B, refill each frame\(mergeable ? ", MRG_RXBUF" : ""))") { n in
                    for _ in 0 ..< n {
                        _ = sink.inject(f, header: VirtioNetHeader())
                        rx.refill()
                    }
                }
            }
            report(m, key: mergeable ? "micro.vq.rx-mrg" : "micro.vq.rx", unit: "round")
        }
    }

    func checksums() {
        for length in [1500, 65_536] {
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 64)
            defer { bytes.deallocate() }
            for i in 0 ..< length { bytes[i] = UInt8(truncatingIfNeeded: i &* 7) }
            let view = UnsafeRawBufferPointer(bytes)
            var sink: UInt16 = 0
            let m = harness.measure("Internet checksum \(length) B", bytes: length) { n in
                for _ in 0 ..< n { sink ^= InternetChecksum.checksum(view) }
            }
            blackHole(UnsafeMutableRawPointer(bitPattern: UInt(sink) | 1))
            Report.emit(m, key: "micro.checksum.\(length)")
            print("\(m.name): \(Report.format(m.nanosecondsPerOp)) ns, \(Report.format(m.gigabitsPerSecond)) Gbit/s")
        }
    }

    /// The capture filter's cost per 1514-byte frame: formatting a pcap record into the
    /// writer's buffer plus its share of the write(2) when the buffer fills — to /dev/null
    /// (the writer alone) and to a tmpfs file (the kernel's page allocation included).
    func capture() throws {
        let directory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        let file = "\(directory)/swiftvmm-bench-\(getpid()).pcap"
        defer { unlink(file) }
        for (path, key, label) in [("/dev/null", "micro.pcap", "pcap capture per frame (1514 B, to /dev/null)"),
                                   (file, "micro.pcap-file", "pcap capture per frame (1514 B, to a tmpfs file)")] {
            let writer = try PcapWriter(path: path)
            let frame = datapath.frame(.mtu, towardDevice: false)
            var rounds = 0
            let m = frame.withUnsafeBytes { f in
                let segments = [f]
                return harness.measure(label, bytes: frame.count) { n in
                    for _ in 0 ..< n { writer.write(segments) }
                    rounds += 1
                    // Keep the file small: start over now and then.
                    if rounds % 4 == 0, path != "/dev/null" { _ = truncate(path, 0) }
                }
            }
            try? writer.close()
            report(m, key: key, unit: "frame")
        }
    }
}
