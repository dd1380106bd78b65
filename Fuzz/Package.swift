// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for swiftvmm (issue 8). Not part of the main package so that a plain
// `swift build` / `swift test` never needs the sanitizer runtimes. Build and run with
// Tools/fuzz (or Tools/fuzz-smoke in CI):
//   swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
// Each executable target is one fuzz target: a file defining `LLVMFuzzerTestOneInput`
// (libFuzzer supplies `main`), with its seed corpus in Corpus/<target>/.
let package = Package(
    name: "swiftvmm-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swiftvmm", path: ".."),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Decodes a fuzzer's byte string into typed choices (sizes, offsets, addresses).
        .target(name: "FuzzSupport", dependencies: [
            .product(name: "VMMCore", package: "swiftvmm"),
            .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzGuestMemory", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzDeviceSpec", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzVirtqueue", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "Virtio", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzFrames", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMNet", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzKernelLoader", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "KVM", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzE1000", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzVirtioNet", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMNet", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzVirtioBlk", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "VMMBlock", package: "swiftvmm"), .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzVirtioConsole", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .executableTarget(name: "FuzzVirtioRng", dependencies: [
            "FuzzSupport", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VMMTestKit", package: "swiftvmm"),
            .product(name: "SwiftVMMDevices", package: "swiftvmm"),
        ]),
        .target(name: "CFuzzShim"),
        .executableTarget(name: "FuzzQMP", dependencies: ["FuzzSupport", .product(name: "QMP", package: "swiftvmm")]),
        .executableTarget(name: "FuzzVFIOUser", dependencies: [
            "FuzzSupport", "CFuzzShim", .product(name: "VMMCore", package: "swiftvmm"), .product(name: "VFIOUser", package: "swiftvmm"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "FuzzPCIBus", dependencies: [
            "FuzzSupport",
            .product(name: "VMMCore", package: "swiftvmm"),
            .product(name: "VMMTestKit", package: "swiftvmm"),
        ]),
    ]
)
