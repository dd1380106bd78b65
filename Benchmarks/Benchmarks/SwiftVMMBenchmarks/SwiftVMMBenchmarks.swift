import BenchSupport
import Benchmark
#if canImport(Glibc)
import Glibc
#endif

// The in-memory datapath and the micro-benchmarks of swiftvmm (issues 7 and 16), on
// ordo-one/benchmark. Run them with
//
//   swift package --package-path Benchmarks benchmark                      # all, ~1 s each
//   swift package --package-path Benchmarks benchmark --filter '^mem\.virtio'
//   swift package --package-path Benchmarks benchmark thresholds check --path "$PWD/Benchmarks/Thresholds"
//
// Every sample runs 1,000 operations (scalingFactor .kilo: frames, rounds, accesses,
// calls), so a sample's wall clock in ns / 1,000 is ns per operation and its malloc
// count / 1,000 is allocations per operation; `--scale` prints them per operation.
// The names are the keys of Tools/bench/run's results (`mem.virtio.tx.1500` …): the
// memcpy of the same bytes (`mem.memcpy.<size>`) runs in the same suite, so the
// ratios to it are same-run ratios.
//
// The hot paths must not allocate: each benchmark fails `thresholds check` when its
// p90 malloc count per sample is above the p90 in Benchmarks/Thresholds (0 for every
// datapath benchmark; the allowed deviation below is 0).
//
// SWIFTVMM_BENCH_MAX_MS (default 1000) caps the time each benchmark samples.

let benchmarks: @Sendable () -> Void = {
    let maxMilliseconds = getenv("SWIFTVMM_BENCH_MAX_MS").flatMap { Int(String(cString: $0)) } ?? 1_000
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .milliseconds(maxMilliseconds),
        maxIterations: 100_000,
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])]
    )

    // MARK: In-memory datapath: the device's own cost per frame, next to one memcpy of it

    for size in FrameSize.allCases {
        workload("mem.memcpy.\(size.key)") { InMemory.memcpyFloor(size) }
    }
    for size in FrameSize.allCases {
        workload("mem.virtio.tx.\(size.key)") { try InMemory.virtioTransmit(size) }
    }
    // A 64 KiB TSO send to a backend without offloads: the device segments it in software.
    workload("mem.virtio.tx.tso64k-sw") { try InMemory.virtioTransmit(.tso, caps: InMemory.bare) }
    for size in FrameSize.allCases {
        workload("mem.virtio.rx.\(size.key)") { try InMemory.virtioReceive(size, mergeable: false) }
        workload("mem.virtio.rx-mrg.\(size.key)") { try InMemory.virtioReceive(size, mergeable: true) }
    }
    for size in FrameSize.allCases {
        workload("mem.e1000.tx.\(size.key)") { try InMemory.e1000Transmit(size) }
    }
    for size in [FrameSize.small, .mtu, .jumbo] {
        workload("mem.e1000.rx.\(size.key)") { try InMemory.e1000Receive(size) }
    }

    // MARK: Micro-benchmarks: the hot paths one at a time
    // (The e1000 TX descriptor costs, legacy and per TSO descriptor, are mem.e1000.tx.1500
    // and mem.e1000.tx.tso64k divided by their descriptors; Tools/bench/from-benchmark.py
    // derives them.)

    workload("micro.bar.read") { try InMemory.barAccess(write: false) }
    workload("micro.bar.write") { try InMemory.barAccess(write: true) }
    workload("micro.vq.tx") { try InMemory.virtqueueTransmitRound() }
    workload("micro.vq.rx") { try InMemory.virtqueueReceiveRound(mergeable: false) }
    workload("micro.vq.rx-mrg") { try InMemory.virtqueueReceiveRound(mergeable: true) }
    workload("micro.checksum.1500") { InMemory.checksum(1500) }
    workload("micro.checksum.65536") { InMemory.checksum(65_536) }
    workload("micro.pcap") { try InMemory.capture(toFile: false) }
    workload("micro.pcap-file", teardown: { unlink(InMemory.pcapFile) }) { try InMemory.capture(toFile: true) }
}

/// A benchmark over one workload: built once per benchmark process (setup, not timed),
/// then each sample runs `benchmark.scaledIterations.count` operations; afterwards the
/// workload's own check (every ring consumed, every frame taken) fails the benchmark if
/// the device did not do the work.
func workload(_ name: String, teardown: @escaping @Sendable () -> Void = {}, _ make: @escaping @Sendable () throws -> Workload) {
    Benchmark(name) { benchmark, workload in
        let n = benchmark.scaledIterations.count
        benchmark.startMeasurement()
        workload.run(n)
        benchmark.stopMeasurement()
        if let failure = workload.failure() { benchmark.error(failure) }
    } setup: {
        try make()
    } teardown: {
        teardown()
    }
}
