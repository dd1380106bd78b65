// swift-tools-version:6.1
import PackageDescription

// Benchmarks for swiftvmm (issues 7 and 16). A separate package so that the main package's
// `swift build` / `swift test` stay free of benchmark code.
//
// - SwiftVMMBenchmarks (Benchmarks/SwiftVMMBenchmarks): the in-memory datapath and the
//   micro-benchmarks on ordo-one/benchmark — its statistics (percentiles over many
//   samples), allocation counting (the malloc interposer) and baselines/thresholds:
//     swift package --package-path Benchmarks benchmark [--filter REGEX]
// - swiftvmm-bench (Sources/SwiftVMMBench): the devices on the real backends (tap, vde,
//   user) and the soak, which Tools/bench/run sets next to the raw C programs in
//   Tools/bench/ and QEMU; no library does those comparisons.
//     swift build --package-path Benchmarks -c release
let package = Package(
    name: "swiftvmm-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swiftvmm", path: ".."),
        // The MallocInterposer trait alone: malloc counts through ordo-one/malloc-interposer
        // (no jemalloc), and not the default RuntimeInterposer trait, whose package is not needed.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // What both executables drive: the guest-side drivers (virtio-net split virtqueues,
        // e1000 descriptor rings), the frames, the in-memory sink and the workloads. Built
        // like the device modules (no dynamic exclusivity checks in release): the sink's
        // frame count and the drivers' ring state are the harness's own, and their checks
        // were ~7 % of what `mem.e1000.tx.1500` charged to the device.
        .target(name: "BenchSupport", dependencies: [
            .product(name: "VMMCore", package: "swiftvmm"),
            .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "Virtio", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ], swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        .executableTarget(name: "SwiftVMMBench", dependencies: [
            "BenchSupport",
            // --sandbox on: the threads run under swiftvmm's seccomp lists (what it costs).
            .product(name: "Sandbox", package: "swiftvmm"),
            .product(name: "VMMCore", package: "swiftvmm"),
            .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "Virtio", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(
            name: "SwiftVMMBenchmarks",
            dependencies: [
                "BenchSupport",
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/SwiftVMMBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
