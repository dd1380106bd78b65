#if canImport(Glibc)
import Glibc
#endif

/// Runs programs for test setup (nbdkit, rm) without Foundation.
enum Shell {
    @discardableResult
    static func run(_ program: String, _ args: [String]) -> Int32 {
        guard let pid = spawn(program, args) else { return -1 }
        return wait(pid)
    }

    /// Runs `program args`, returns its status and stdout (stderr discarded).
    static func output(_ program: String, _ args: [String]) -> (status: Int32, output: String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return (-1, "") }
        guard let pid = spawn(program, args, stdout: fds[1]) else {
            close(fds[0]); close(fds[1])
            return (-1, "")
        }
        close(fds[1])
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[0 ..< n]
        }
        close(fds[0])
        return (wait(pid), String(decoding: out, as: UTF8.self))
    }

    /// Starts a program in the background, stdout (unless given) and stderr to /dev/null.
    static func spawn(_ program: String, _ args: [String], stdin: Int32? = nil, stdout: Int32? = nil) -> pid_t? {
        let path = program.hasPrefix("/") ? program : (Host.path(of: program) ?? program)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let input = stdin { posix_spawn_file_actions_adddup2(&actions, input, 0) }
        if let out = stdout { posix_spawn_file_actions_adddup2(&actions, out, 1) } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // The test runner's threads block some signals; a child must not inherit that.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid = pid_t()
        guard posix_spawn(&pid, path, &actions, &attributes, argv, environ) == 0 else { return nil }
        return pid
    }

    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return (status >> 8) & 0xFF
    }

    /// `signal` (SIGTERM), then SIGKILL if it is still there after 2 s; always reaped.
    static func kill(_ pid: pid_t, signal: Int32 = SIGTERM) {
        Glibc.kill(pid, signal)
        var status: Int32 = 0
        for _ in 0 ..< 200 {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(10_000)
        }
        Glibc.kill(pid, SIGKILL)
        _ = wait(pid)
    }
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = clockMilliseconds() + UInt64(seconds * 1000)
    while clockMilliseconds() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

func clockMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}
