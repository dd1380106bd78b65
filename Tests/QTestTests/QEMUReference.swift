#if canImport(Glibc)
import Glibc
#endif

/// QEMU 7.2 (Debian) in qtest mode as a reference, started the way shared/README.md
/// describes: no qtest accelerator in Debian's build, so TCG with a firmware that only halts.
/// (posix_spawn rather than Foundation's Process, whose waitUntilExit hangs here.)
final class QEMUReference {
    struct StartError: Error, CustomStringConvertible {
        let description: String
    }

    static let binaryName = "qemu-system-x86_64"

    /// Where `qemu-system-x86_64` is on PATH, if anywhere.
    static var binary: String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(binaryName)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static var isAvailable: Bool { binary != nil }

    private var pid: pid_t = 0
    private let toQEMU: Int32
    private let fromQEMU: Int32
    private let firmwarePath: String
    private var pending: [UInt8] = []

    /// - Parameter devices: `-device` arguments, e.g. `e1000,addr=04.0`.
    init(devices: [String]) throws {
        guard let binary = Self.binary else { throw StartError(description: "\(Self.binaryName) not found") }
        // 64 KiB of `hlt`; the reset vector (offset 0xFFF0) is `hlt; jmp $-1`.
        var firmware = [UInt8](repeating: 0xF4, count: 0x1_0000)
        firmware[0xFFF0 ..< 0xFFF3] = [0xF4, 0xEB, 0xFD]
        var template = Array("/tmp/qtest-hlt-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw StartError(description: "mkstemp failed") }
        firmwarePath = String(cString: template)
        let written = firmware.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == firmware.count else { throw StartError(description: "cannot write \(firmwarePath)") }

        var input: [Int32] = [0, 0], output: [Int32] = [0, 0]
        guard pipe(&input) == 0, pipe(&output) == 0 else { throw StartError(description: "pipe failed") }
        toQEMU = input[1]
        fromQEMU = output[0]
        let arguments = [binary, "-machine", "pc,pit=off", "-qtest", "stdio", "-qtest-log", "none", "-display", "none",
                         "-nodefaults", "-accel", "tcg", "-bios", firmwarePath, "-m", "128M"]
            + devices.flatMap { ["-device", $0] }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        for fd in input + output { posix_spawn_file_actions_addclose(&actions, fd) }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        // The test runner's threads block signals; the child must not inherit that mask.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let rc = posix_spawn(&pid, binary, &actions, &attributes, &argv, environ)
        close(input[0])
        close(output[1])
        guard rc == 0 else {
            close(toQEMU); close(fromQEMU); unlink(firmwarePath)
            throw StartError(description: "posix_spawn \(binary) failed: \(rc)")
        }
    }

    deinit {
        close(toQEMU)
        kill(pid, SIGKILL) // nothing of QEMU's state is needed afterwards
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(fromQEMU)
        unlink(firmwarePath)
    }

    /// Sends one request and returns QEMU's response line (IRQ lines skipped).
    func ask(_ request: String) -> String {
        let bytes = Array((request + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(toQEMU, $0.baseAddress, $0.count) }
        while true {
            let line = readLine()
            if !line.hasPrefix("IRQ ") { return line }
        }
    }

    private func readLine() -> String {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return line
            }
            let n = chunk.withUnsafeMutableBytes { read(fromQEMU, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return "<QEMU closed the connection>" }
            pending.append(contentsOf: chunk[0 ..< n])
        }
    }
}
