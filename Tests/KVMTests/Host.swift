import Foundation
import KVM

/// What this host offers, for test traits (each skip names what is missing).
enum Host {
    static let hasKVM = KVMSystem.isAvailable

    /// gcc that can generate 32-bit code (the mini guest links nothing, so no multilib libc is needed).
    static let hasGCC32: Bool = {
        guard let gcc = which("gcc") else { return false }
        return run(gcc, ["-m32", "-ffreestanding", "-c", "-x", "c", "-o", "/dev/null", "-"], input: "int x;\n") == 0
    }()

    /// Debian's linux-image-amd64 kernel (the compressed image; tier 2 extracts its vmlinux).
    static let debianKernel: String? = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        return names.filter { $0.hasPrefix("vmlinuz-") }.sorted().last.map { "/boot/" + $0 }
    }()

    /// Hardware virtualization: vmx/svm in /proc/cpuinfo and not the software-assisted kvm_pvm.
    static let hasHardwareVirtualization: Bool = {
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") { return false }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return cpuinfo.contains(" vmx") || cpuinfo.contains(" svm")
    }()

    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], input: String? = nil) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        let pipe = Pipe()
        p.standardInput = pipe
        do { try p.run() } catch { return -1 }
        if let input { pipe.fileHandleForWriting.write(Data(input.utf8)) }
        try? pipe.fileHandleForWriting.close()
        p.waitUntilExit()
        return p.terminationStatus
    }
}
