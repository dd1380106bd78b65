#ifndef CSANDBOX_H
#define CSANDBOX_H
// seccomp-bpf allow-lists per thread role, built with libseccomp (Docs/security.md).
// A forbidden system call raises SIGSYS (SECCOMP_RET_TRAP); the handler here writes one
// line naming the call and the thread's role to stderr and ends the process.

/// Roles; keep in sync with VMMCore's ThreadRole.
enum csandbox_role {
    CSANDBOX_MAIN = 0,      // the CLI's main thread once the VM runs: waits for signals, tears down
    CSANDBOX_VCPU = 1,      // KVM_RUN and exits (device registers, interrupts)
    CSANDBOX_IO = 2,        // the epoll loop: backends, timers, doorbells, slirp flows
    CSANDBOX_CONTROL = 3,   // QMP and vfio-user servers: accept, messages, client memory, captures
    CSANDBOX_DISK = 4,      // block file workers: positioned I/O, flush, discard
    CSANDBOX_DISK_CONNECT = 5, // NBD reconnects: sockets and name lookups
    CSANDBOX_CLOSER = 6,    // closes descriptors peers passed in, which can wait on the peer
};

enum csandbox_mode { CSANDBOX_TRAP = 0, CSANDBOX_LOG = 1 };

/// Once per process, before any thread enters: the SIGSYS handler and the table of
/// system call names it prints from (built here, since the handler must not allocate).
/// Returns 0, or -errno.
/// `runas_uid`/`runas_gid`/`runas_group_count` (or -1): the identity `--runas` drops to
/// after the filters are in place; every thread must then take part in glibc's setxid
/// broadcast, so each filter allows setuid/setgid to exactly these ids and setgroups with
/// exactly that many groups, nothing else.
int csandbox_prepare(int mode, long runas_uid, long runas_gid, long runas_group_count);

/// Installs the calling thread's filter for `role` (it and the threads it creates from
/// now on). Returns 0, or a negative errno from libseccomp.
int csandbox_enter(int role);

/// `--runas`: gives the socket at `path` to uid:gid, if it is still a socket this process
/// owns with one name (a link or another file put in its place since is left alone).
/// Returns 0 or a negative errno (EPERM for such a replacement).
int csandbox_hand_over_socket(const char *path, long uid, long gid);

/// The calling thread's role name, or NULL before it entered.
const char *csandbox_current_role(void);

/// For `swiftvmm sandbox-check` (tests): makes one system call — 0 open, 1 execve,
/// 2 socket, 3 ptrace, 4 fork, 5 write, 6 ioctl(KVM_RUN) on a bad descriptor, 7 open with
/// O_CREAT, 8 uname, 9 sendmmsg, 10 an executable mmap (-errno), 11 tgkill of another
/// process, 12 tgkill of this thread (signal 0) — and returns
/// its result. Inside a sandbox that forbids it, the process ends instead.
long csandbox_probe(int which);

#endif
