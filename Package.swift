// swift-tools-version:6.2
import PackageDescription

// Layers (arrows: may import)
//   swiftvmm (CLI) -> KVM, QTest, VFIOUser, DeviceCatalog -> Devices/* -> Virtio, VMMNet -> VMMCore
//   VMMNet -> CChecksum (the checksum's 256-bit loop, chosen at run time)
//   NetBackends -> VMMNet, CVDEPlug, CSlirp, CLinux (tun ioctls); only KVM imports CKVM
//   BlockBackends -> VMMBlock, CNBD (libnbd), CLinux (O_DIRECT, fallocate, block ioctls)
//   VMMTestKit -> VMMCore, VMMNet, VMMBlock (what device tests import); QTest -> VMMTestKit
// The frame paths (rings, descriptor chains, per-device scratch buffers kept in class
// properties) pay for Swift's dynamic exclusivity checks on every access: about 40% of
// virtio-net's per-frame time (Docs/performance.md); in VMMCore (guest memory, the
// per-action cost meter) about 16% of e1000 and virtio-net RX. Release builds of those
// modules rely on the static checks only; debug builds and tests keep the dynamic ones.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "swiftvmm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "swiftvmm", targets: ["swiftvmm"]),
        .library(name: "VMMCore", targets: ["VMMCore"]),
        .library(name: "VMMNet", targets: ["VMMNet"]),
        .library(name: "VMMBlock", targets: ["VMMBlock"]),
        .library(name: "VMMTestKit", targets: ["VMMTestKit"]),
        .library(name: "Virtio", targets: ["Virtio"]),
        .library(name: "SwiftVMMDevices", targets: ["E1000", "VirtioNet", "VirtioBlk", "VirtioRng", "VirtioConsole", "NetBackends", "BlockBackends", "DeviceCatalog"]),
        .library(name: "KVM", targets: ["KVM"]),
        .library(name: "VFIOUser", targets: ["VFIOUser"]),
        .library(name: "QMP", targets: ["QMP"]),
        .library(name: "Sandbox", targets: ["Sandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // C shims: ioctl and the Linux headers Swift cannot import directly. CLinux serves
        // every layer (sockets, epoll, eventfd, memfd, TUN); CKVM (linux/kvm.h) only KVM.
        .target(name: "CLinux", path: "Sources/CLinux"),
        .target(name: "CKVM", path: "Sources/CKVM"),
        // seccomp allow-lists per thread role (libseccomp), for the CLI's sandbox.
        .target(name: "CSandbox", path: "Sources/CSandbox", linkerSettings: [.linkedLibrary("seccomp")]),
        .target(name: "CVDEPlug", path: "Sources/CVDEPlug", linkerSettings: [.linkedLibrary("vdeplug")]),
        .systemLibrary(name: "CSlirp", path: "Sources/CSlirp", pkgConfig: "slirp"),
        // libnbd's header (libnbd-dev), its library loaded on first use (CNBD/loader.c).
        .target(name: "CNBD", path: "Sources/CNBD"),
        // The Internet checksum's 256-bit loop, chosen at run time (Swift has no
        // per-function target attribute; InternetChecksum keeps the portable loop).
        .target(name: "CChecksum", path: "Sources/CChecksum"),

        .target(name: "VMMCore", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
            "CLinux",
        ], swiftSettings: hotPath),
        .target(name: "VMMNet", dependencies: ["VMMCore", "CChecksum"], swiftSettings: hotPath),
        .target(name: "Virtio", dependencies: ["VMMCore"], swiftSettings: hotPath),
        // The block layer: the backend protocol block devices use (like VMMNet for NICs).
        .target(name: "VMMBlock", dependencies: ["VMMCore"]),
        // Block backends (like NetBackends for NICs): raw files and block devices, NBD exports.
        .target(name: "BlockBackends", dependencies: ["VMMCore", "VMMBlock", "CNBD", "CLinux"]),
        .target(name: "E1000", dependencies: ["VMMCore", "VMMNet"], path: "Devices/E1000", swiftSettings: hotPath),
        .target(name: "VirtioNet", dependencies: ["VMMCore", "VMMNet", "Virtio"], path: "Devices/VirtioNet", swiftSettings: hotPath),
        .target(name: "VirtioBlk", dependencies: ["VMMCore", "VMMBlock", "Virtio"], path: "Devices/VirtioBlk"),
        .target(name: "VirtioRng", dependencies: ["VMMCore", "Virtio", "CLinux"], path: "Devices/VirtioRng"),
        .target(name: "VirtioConsole", dependencies: ["VMMCore", "Virtio"], path: "Devices/VirtioConsole"),
        .target(name: "NetBackends", dependencies: ["VMMCore", "VMMNet", "CLinux", "CVDEPlug", "CSlirp"]),
        // The one place that lists device types and backends: adding a device is one line here.
        .target(name: "DeviceCatalog", dependencies: ["VMMCore", "VMMNet", "VMMBlock", "E1000", "VirtioNet", "VirtioBlk", "VirtioRng", "VirtioConsole", "NetBackends", "BlockBackends"]),
        .target(name: "VMMTestKit", dependencies: ["VMMCore", "VMMNet", "VMMBlock"]),
        .target(name: "QTest", dependencies: ["VMMCore", "VMMNet", "VMMBlock", "VMMTestKit"]),
        .target(name: "KVM", dependencies: ["VMMCore", "CKVM", "CLinux"]),
        .target(name: "Sandbox", dependencies: ["VMMCore", "CSandbox"]),
        // The control socket: QEMU's Machine Protocol (QMP) for `run` and `serve`.
        .target(name: "QMP", dependencies: ["VMMCore", "VMMNet", "VMMBlock", "CLinux", .product(name: "Logging", package: "swift-log")]),
        // The vfio-user platform: serves one device per socket to another VMM.
        .target(name: "VFIOUser", dependencies: ["VMMCore", "CLinux", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "swiftvmm", dependencies: [
            "VMMCore", "VMMNet", "VMMBlock", "KVM", "QTest", "QMP", "VFIOUser", "DeviceCatalog", "NetBackends", "BlockBackends", "VirtioConsole", "Sandbox", "CSandbox", "CLinux",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "CoreTests", dependencies: ["VMMCore", "VMMTestKit"]),
        .testTarget(name: "NetTests", dependencies: ["VMMNet", "VMMTestKit"]),
        .testTarget(name: "E1000Tests", dependencies: ["E1000", "VMMTestKit", "VMMNet"]),
        .testTarget(name: "VirtioNetTests", dependencies: ["VirtioNet", "Virtio", "VMMTestKit", "VMMNet"]),
        .testTarget(name: "VirtioBlkTests", dependencies: ["VirtioBlk", "Virtio", "VMMTestKit", "VMMBlock"]),
        .testTarget(name: "VirtioRngTests", dependencies: ["VirtioRng", "Virtio", "VMMTestKit"]),
        .testTarget(name: "VirtioConsoleTests", dependencies: ["VirtioConsole", "Virtio", "VMMCore", "VMMTestKit"]),
        // Peers/: fake peers in Python that tests start by path, not sources.
        .testTarget(name: "BackendTests", dependencies: ["NetBackends", "VMMNet", "VMMTestKit"], exclude: ["Peers"]),
        .testTarget(name: "QTestTests", dependencies: ["QTest", "VMMTestKit", "DeviceCatalog"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "VMMCore", "DeviceCatalog"]),
        .testTarget(name: "CLITests", dependencies: ["DeviceCatalog", "VMMCore", "Sandbox"]),
        .testTarget(name: "BlockBackendTests", dependencies: ["BlockBackends", "VMMBlock", "VMMCore", "VMMTestKit"], exclude: ["Peers"]),
        .testTarget(name: "QMPTests", dependencies: ["QMP"]),
        .testTarget(name: "VFIOUserTests", dependencies: ["VFIOUser", "VMMCore", "CLinux", .product(name: "Logging", package: "swift-log")]),
    ]
)
