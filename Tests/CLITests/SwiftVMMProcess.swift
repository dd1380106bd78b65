import Foundation

/// Runs the built `swiftvmm` executable as a subprocess, as a user would.
enum SwiftVMMProcess {
    /// The executable next to this test bundle in the build directory.
    static let executable: String? = {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = me.deletingLastPathComponent()
        for _ in 0 ..< 4 {
            let candidate = dir.appendingPathComponent("swiftvmm").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }()

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        /// stderr's non-empty lines.
        var errorLines: [Substring] { stderr.split(separator: "\n") }
    }

    /// Runs with `arguments`; `whileRunning` gets the process (e.g. to signal it) before
    /// waiting. Standard input is `input` (held open by the caller), else at end of file.
    static func run(_ arguments: [String], timeout: Double = 60, input: Pipe? = nil,
                    whileRunning: ((Process) -> Void)? = nil) throws -> Result {
        guard let executable else { throw MissingExecutable() }
        return try run(executable: executable, arguments, timeout: timeout, input: input, whileRunning: whileRunning)
    }

    /// Runs any program the same way (helpers such as `ip` and `setpriv`).
    static func run(executable: String, _ arguments: [String], timeout: Double = 60, input: Pipe? = nil,
                    whileRunning: ((Process) -> Void)? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        if let input { p.standardInput = input } else { p.standardInput = FileHandle.nullDevice }
        try p.run()
        // Drain both pipes concurrently so a chatty process never blocks on a full pipe.
        nonisolated(unsafe) var outData = Data(), errData = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        whileRunning?(p)
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        group.wait()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    struct MissingExecutable: Error, CustomStringConvertible {
        var description: String { "swiftvmm executable not found next to the test bundle (run swift build first)" }
    }
}

enum CLIHost {
    static let hasExecutable = SwiftVMMProcess.executable != nil
    static let hasKVM = access("/dev/kvm", R_OK | W_OK) == 0
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The mini guest, built with Tools/guest/mini/build.sh (nil when gcc -m32 is unavailable).
    static let miniGuest: String? = {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-cli-mini-\(getpid())").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = [repositoryRoot.appendingPathComponent("Tools/guest/mini/build.sh").path, out]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out + "/mini.elf" : nil
    }()

    static func temporaryFile(_ contents: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-cli-\(UUID().uuidString)").path
        try Data(contents).write(to: URL(fileURLWithPath: path))
        return path
    }
}
