#if canImport(Glibc)
import Glibc
#endif

/// Every in-memory workload by its result key (`mem.virtio.tx.1500`, `micro.bar.read` …),
/// in the order the benchmarks run. Both executables read it: SwiftVMMBenchmarks makes a
/// package-benchmark benchmark of each, and `swiftvmm-bench profile NAME N` runs one
/// alone so that `perf record` or `valgrind --tool=callgrind` see nothing but it.
package enum WorkloadCatalog {
    package struct Entry: Sendable {
        package let name: String
        package let make: @Sendable () throws -> Workload
        /// Run once the benchmark is over (files a workload leaves behind).
        package let teardown: @Sendable () -> Void
    }

    package static let entries: [Entry] = {
        var e: [Entry] = []
        func add(_ name: String, teardown: @escaping @Sendable () -> Void = {}, _ make: @escaping @Sendable () throws -> Workload) {
            e.append(Entry(name: name, make: make, teardown: teardown))
        }
        // In-memory datapath: the device's own cost per frame, next to one memcpy of it.
        for size in FrameSize.allCases {
            add("mem.memcpy.\(size.key)") { InMemory.memcpyFloor(size) }
        }
        for size in FrameSize.allCases {
            add("mem.virtio.tx.\(size.key)") { try InMemory.virtioTransmit(size) }
        }
        // A 64 KiB TSO send to a backend without offloads: the device segments it in software.
        add("mem.virtio.tx.tso64k-sw") { try InMemory.virtioTransmit(.tso, caps: InMemory.bare) }
        for size in FrameSize.allCases {
            add("mem.virtio.rx.\(size.key)") { try InMemory.virtioReceive(size, mergeable: false) }
            add("mem.virtio.rx-mrg.\(size.key)") { try InMemory.virtioReceive(size, mergeable: true) }
        }
        for size in FrameSize.allCases {
            add("mem.e1000.tx.\(size.key)") { try InMemory.e1000Transmit(size) }
        }
        for size in [FrameSize.small, .mtu, .jumbo] {
            add("mem.e1000.rx.\(size.key)") { try InMemory.e1000Receive(size) }
        }

        // Micro-benchmarks: the hot paths one at a time. (The e1000 TX descriptor costs,
        // legacy and per TSO descriptor, are mem.e1000.tx.1500 and mem.e1000.tx.tso64k
        // divided by their descriptors; Tools/bench/from-benchmark.py derives them.)
        add("micro.bar.read") { try InMemory.barAccess(write: false) }
        add("micro.bar.write") { try InMemory.barAccess(write: true) }
        add("micro.vq.tx") { try InMemory.virtqueueTransmitRound() }
        add("micro.vq.rx") { try InMemory.virtqueueReceiveRound(mergeable: false) }
        add("micro.vq.rx-mrg") { try InMemory.virtqueueReceiveRound(mergeable: true) }
        add("micro.checksum.1500") { InMemory.checksum(1500) }
        add("micro.checksum.65536") { InMemory.checksum(65_536) }
        add("micro.pcap") { try InMemory.capture(toFile: false) }
        add("micro.pcap-file", teardown: { unlink(InMemory.pcapFile) }) { try InMemory.capture(toFile: true) }
        return e
    }()

    package static func entry(named name: String) -> Entry? { entries.first { $0.name == name } }
}
