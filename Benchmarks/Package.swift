// swift-tools-version:6.1
import PackageDescription

// Benchmarks for swiftvmm (issue 7). A separate package so that the main package's
// `swift build` / `swift test` stay free of benchmark code. One executable,
// `swiftvmm-bench`, drives the devices through the test kit (no KVM) against an
// in-memory sink and the real backends (tap, vde, user); Tools/bench/run runs it next
// to the raw C limits in Tools/bench/ and prints same-run ratios.
//   swift build --package-path Benchmarks -c release
let package = Package(
    name: "swiftvmm-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swiftvmm", path: ".."),
    ],
    targets: [
        // Counts malloc/calloc/realloc/memalign calls by interposing glibc's allocator,
        // so a benchmark can report allocations per frame (the hot path must show 0).
        .target(name: "CMallocCounter"),
        .executableTarget(name: "SwiftVMMBench", dependencies: [
            "CMallocCounter",
            .product(name: "VMMCore", package: "swiftvmm"),
            .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "Virtio", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
    ]
)
