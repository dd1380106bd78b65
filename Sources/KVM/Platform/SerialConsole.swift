#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import VMMCore

/// Where COM1 goes: the process's stdin/stdout, a file, or nowhere.
public enum SerialAttachment: Sendable, Equatable {
    case stdio
    case file(String)
    case none
}

/// The host end of COM1: writes the guest's bytes to a file descriptor, feeds stdin into
/// the UART's receive FIFO through the event loop (stopping reads while the FIFO is full),
/// and notes when the first byte of output appeared (boot time to first serial output).
final class SerialConsole: @unchecked Sendable {
    private let outputFD: Int32
    private let ownsOutput: Bool
    /// The guest's bytes on their way out (nil with `--serial none`).
    private let output: ConsoleOutput?
    /// `--serial file:` that did not exist before: removed again if the VM never runs
    /// (a later option was refused), so bad input leaves nothing behind.
    private let createdFile: String?
    /// The file is emptied when the VM starts, not when it is opened: an existing console
    /// log survives a command line that is refused after `--serial`.
    private var truncateOnStart = false
    private var started = false
    private let start: UInt64
    private let logger: Logger
    private let firstOutput = Atomic<Bool>(false)
    private var inputRegistration: IORegistration?
    /// stdin is out of the loop while the FIFO is full (loop thread). Not merely watched
    /// for nothing: epoll reports a hang-up whatever the mask, and a pipe whose writer
    /// left would then wake the loop on every turn until the guest read.
    private var inputParked = false
    /// What stdin is read through: a description of its own (opened through /proc) that
    /// can be non-blocking alone, or stdin itself where none can be opened (a socket),
    /// then with `savedInputFlags` to restore. -1 when input is not attached.
    private var inputFD: Int32 = -1
    private var ownsInputFD = false
    /// stdin's file status flags before O_NONBLOCK was added (restored: the terminal is shared).
    private var savedInputFlags: Int32?
    /// On a terminal in raw mode Ctrl-C reaches the guest, so the VMM needs its own way out:
    /// Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A and anything else is dropped
    /// (QEMU's `-serial mon:stdio` convention).
    private var escapes = false
    private var quit: (@Sendable () -> Void)?
    private var sawEscape = false
    static let escapeByte: UInt8 = 0x01

    init(attachment: SerialAttachment, start: UInt64, logger: Logger) throws(MachineError) {
        self.start = start
        self.logger = logger
        switch attachment {
        case .stdio:
            outputFD = STDOUT_FILENO
            ownsOutput = false
            createdFile = nil
        case .none:
            outputFD = -1
            ownsOutput = false
            createdFile = nil
        case let .file(path):
            // Non-blocking: opening a FIFO for writing would wait for a reader for ever, with
            // SIGINT and SIGTERM already blocked for the VMM's own handling.
            let fd: Int32, created: Bool
            switch OutputFile.open(path) {
            case let .success(opened): (fd, created) = opened
            case .failure(.danglingLink): throw .serialFileLink(path: path)
            case let .failure(.open(e)):
                // A FIFO without a reader answers ENXIO, a socket ENXIO too: not a kind we write to.
                var target = stat()
                if stat(path, &target) == 0, ![S_IFREG, S_IFCHR].contains(target.st_mode & S_IFMT) { throw .serialFileKind(path: path) }
                throw .serialFile(path: path, errno: e)
            }
            // A file or a character device (a terminal, /dev/null); a FIFO or a socket that
            // stops reading would only fill the console buffer.
            var info = stat()
            guard fstat(fd, &info) == 0, [S_IFREG, S_IFCHR].contains(info.st_mode & S_IFMT) else {
                close(fd)
                if created { unlink(path) }
                throw .serialFileKind(path: path)
            }
            outputFD = fd
            ownsOutput = true
            createdFile = created ? path : nil
            truncateOnStart = true
        }
        output = outputFD >= 0 ? ConsoleOutput(fd: outputFD, logger: logger) : nil
    }

    deinit {
        if ownsOutput { close(outputFD) }
        if !started, let createdFile { unlink(createdFile) }
    }

    func emit(_ byte: UInt8) {
        if !firstOutput.exchange(true, ordering: .relaxed) {
            let ns = MonotonicTime.nanoseconds() &- start
            logger.info("first serial output after \(Double(ns / 1000) / 1000) ms")
        }
        output?.append(byte)
    }

    /// The I/O loop writes the guest's output from here on (before the vCPUs start).
    func attachOutput(to loop: EventLoop) {
        started = true
        if truncateOnStart { _ = ftruncate(outputFD, 0) }
        output?.attach(to: loop)
    }

    /// After the loop stopped: the last buffered bytes, if the reader takes them soon.
    func finishOutput() { output?.finish() }

    /// Guest bytes lost to a reader that did not keep up or went away.
    var droppedOutputBytes: UInt64 { output?.droppedBytes ?? 0 }

    /// Feeds stdin into `uart`; stdin that cannot be polled (a regular file) or ends is left alone.
    /// When stdin is a terminal, `onQuit` runs on Ctrl-A x.
    func attachInput(to uart: Serial16550, loop: EventLoop, onQuit: @escaping @Sendable () -> Void) {
        escapes = isatty(STDIN_FILENO) == 1
        quit = onQuit
        // The loop reads without blocking. On a terminal stdin's description is stdout's and
        // stderr's too: O_NONBLOCK there made their writes fail with EAGAIN (a log line lost
        // after ^S) and stayed set if the process was killed. A description of its own
        // carries the flag alone (as the console's output does, ConsoleOutput).
        let own = open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        if own >= 0 {
            inputFD = own
            ownsInputFD = true
        } else {
            let flags = fcntl(STDIN_FILENO, F_GETFL)
            guard flags >= 0 else { return }
            savedInputFlags = flags
            _ = fcntl(STDIN_FILENO, F_SETFL, flags | O_NONBLOCK)
            inputFD = STDIN_FILENO
        }
        do {
            try registerInput(uart, loop: loop)
        } catch {
            logger.debug("serial input not attached: \(error)")
            detachInput()
            return
        }
        uart.onRoomForInput = { [weak self] in
            loop.execute { [weak self] in
                guard let self, self.inputParked, self.inputFD >= 0 else { return }
                self.inputParked = false
                try? self.registerInput(uart, loop: loop)
            }
        }
    }

    private func registerInput(_ uart: Serial16550, loop: EventLoop) throws {
        inputRegistration = try loop.register(fd: inputFD, events: .readable) { [weak self] _ in
            self?.pumpInput(into: uart, loop: loop)
        }
    }

    /// The FIFO is full: stdin leaves the loop until the guest reads (`onRoomForInput`).
    private func parkInput(_ loop: EventLoop) {
        guard let registration = inputRegistration else { return }
        loop.unregister(registration)
        inputRegistration = nil
        inputParked = true
    }

    /// Gives stdin back as it was (call after the event loop has stopped).
    func detachInput() {
        if ownsInputFD { close(inputFD) }
        if let flags = savedInputFlags { _ = fcntl(STDIN_FILENO, F_SETFL, flags) }
        savedInputFlags = nil
        inputFD = -1
        ownsInputFD = false
        inputRegistration = nil
        inputParked = false
    }

    private func pumpInput(into uart: Serial16550, loop: EventLoop) {
        guard let registration = inputRegistration else { return }
        let room = uart.inputRoom
        guard room > 0 else {
            parkInput(loop)
            return
        }
        // Read only what the FIFO can take, so no input is lost; the rest waits in the kernel.
        var buffer = [UInt8](repeating: 0, count: room)
        let n = buffer.withUnsafeMutableBytes { read(inputFD, $0.baseAddress, $0.count) }
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
            loop.unregister(registration)
            inputRegistration = nil
            return
        }
        guard n > 0 else { return }
        guard escapes else {
            _ = uart.receive(buffer[0 ..< n])
            return
        }
        var forward: [UInt8] = []
        for byte in buffer[0 ..< n] {
            if sawEscape {
                sawEscape = false
                if byte == UInt8(ascii: "x") {
                    quit?()
                    return
                }
                if byte == Self.escapeByte { forward.append(byte) }
            } else if byte == Self.escapeByte {
                sawEscape = true
            } else {
                forward.append(byte)
            }
        }
        _ = uart.receive(forward) // at most n bytes: fits the room read above
        if !uart.hasRoomForInput { parkInput(loop) }
    }
}

/// Raw mode for an interactive console (no echo, no line editing, no signals from keys),
/// restored on exit.
public final class TerminalRawMode {
    private var saved = termios()
    private let fd: Int32
    private var active = false

    public init(fd: Int32 = STDIN_FILENO) {
        self.fd = fd
        guard isatty(fd) == 1, tcgetattr(fd, &saved) == 0 else { return }
        var raw = saved
        cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR) // keep host log lines readable
        active = tcsetattr(fd, TCSANOW, &raw) == 0
    }

    public func restore() {
        guard active else { return }
        tcsetattr(fd, TCSANOW, &saved)
        active = false
    }

    deinit { restore() }
}
