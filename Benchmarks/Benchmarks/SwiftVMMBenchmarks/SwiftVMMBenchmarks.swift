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

    // The workloads and their names live in BenchSupport (WorkloadCatalog), which
    // `swiftvmm-bench profile` also runs, one at a time, for perf and callgrind.
    for entry in WorkloadCatalog.entries {
        workload(entry.name, teardown: entry.teardown, entry.make)
    }
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
