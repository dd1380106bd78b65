import Foundation
import Testing

/// The library products as a user's package gets them: by version, from a tagged clone.
/// SwiftPM refuses unsafe build flags in a versioned dependency whose manifest is below
/// tools-version 6.2; this builds an outside package that writes a device against VMMCore
/// and tests it with VMMTestKit, as a porter of a bhyve device would. About a minute.
@Suite struct VersionedDependencyTests {
    private func sh(_ script: String, in directory: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    @Test func anOutsidePackageBuildsAndTestsAgainstATaggedRelease() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-outside-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        // The committed tree, tagged as a release would be.
        let (cloned, cloneLog) = try sh("git clone -q '\(CLIHost.repositoryRoot.path)' swiftvmm && git -C swiftvmm tag 1.0.0", in: work)
        try #require(cloned == 0, "clone: \(cloneLog)")
        let files: [String: String] = [
            "consumer/Package.swift": """
            // swift-tools-version:6.1
            import PackageDescription
            let package = Package(
                name: "consumer",
                dependencies: [.package(url: "file://\(work)/swiftvmm", from: "1.0.0")],
                targets: [
                    .target(name: "DummyDevice", dependencies: [.product(name: "VMMCore", package: "swiftvmm")]),
                    .testTarget(name: "DummyDeviceTests", dependencies: ["DummyDevice", .product(name: "VMMTestKit", package: "swiftvmm")]),
                ]
            )
            """,
            "consumer/Sources/DummyDevice/DummyDevice.swift": """
            import VMMCore
            public final class DummyDevice: PCIDevice {
                public static let typeName = "dummy"
                public static let summary = "registers that read back"
                var registers = [UInt64](repeating: 0, count: 2)
                public init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
                    context.config.setIdentity(PCIIdentity(vendorID: 0x1AF4, deviceID: 0x10FF, classCode: 0xFF_00_00))
                    context.config.declareBAR(0, .memory32(size: 16))
                }
                public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 { registers[Int(offset / 8) % 2] }
                public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) { registers[Int(offset / 8) % 2] = value }
            }
            """,
            "consumer/Tests/DummyDeviceTests/DummyDeviceTests.swift": """
            import DummyDevice
            import Testing
            import VMMTestKit
            @Test func registersReadBack() throws {
                let machine = try TestMachine()
                let device = try machine.add(DummyDevice.self)
                device.write64(bar: 0, offset: 8, 0x1234_5678)
                #expect(device.read64(bar: 0, offset: 8) == 0x1234_5678)
                #expect(device.configRead(0) == 0x10FF_1AF4)
            }
            """,
        ]
        for (path, text) in files {
            let url = URL(fileURLWithPath: work).appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        let (status, log) = try sh("swift build --build-tests 2>&1 && swift test --skip-build 2>&1", in: work + "/consumer")
        #expect(status == 0, "outside package:\n\(log.suffix(3000))")
    }
}
