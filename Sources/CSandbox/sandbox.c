#define _GNU_SOURCE
#include "CSandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#define MAX_SYSCALL 512
static char syscall_names[MAX_SYSCALL][24];
static int sandbox_mode = CSANDBOX_TRAP;
static long drop_uid = -1, drop_gid = -1, drop_group_count = -1;
static __thread const char *thread_role;

static const char *role_names[] = { "main", "vcpu", "io-loop", "control", "disk", "disk-connect", "closer" };

// What every thread needs once running: memory, time, futexes, I/O on descriptors it
// already has, leaving. mmap/mprotect (no executable pages) and tgkill (own threads
// only) have argument rules in csandbox_enter.
static const char *common_calls[] = {
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "close",
    "futex", "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getpid", "gettid", "getrandom",
    "munmap", "madvise", "brk", "mremap",
    "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "sched_yield", "sched_getaffinity",
    "exit", "exit_group", "restart_syscall", "fcntl", "fstat", "newfstatat", "lseek",
    "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_ctl", "eventfd2",
    "sendmsg", "recvmsg", "sendto", "recvfrom", "getsockopt", "shutdown", "set_robust_list", "rseq",
    NULL,
};
// Per role, on top of the common calls. No role may make a listening Unix socket
// (`UnixSocketListener` sets its mode with fchmod before bind, which none allows): every
// listener — QMP, vfio-user, qtest, a stream server, a console's chardev — is made by the
// main thread before it confines itself; a sandboxed backend swap takes descriptors.
// accept: `swiftvmm qtest --socket` takes its one client on the main thread (the socket
// was made before the sandbox), then removes the socket file, which the control role may not.
static const char *main_calls[] = { "rt_sigtimedwait", "rt_sigaction", "unlink", "unlinkat", "ioctl", "accept", NULL };
static const char *vcpu_calls[] = { NULL };
static const char *io_calls[] = {
    // libslirp's per-flow host sockets, stream/VDE reconnects, a stream server's peer
    // (and read-only opens, below)
    "socket", "connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername", "setsockopt",
    "timerfd_settime", "timerfd_gettime", NULL,
};
static const char *control_calls[] = {
    // QMP and vfio-user clients; x-swiftvmm-capture-start creates its pcap file (openat,
    // Docs/security.md); block_resize truncates a file-backed disk
    "accept", "accept4", "openat", "ftruncate", "setsockopt", "getsockname",
    // vfio-user SET_IRQS checks that a descriptor is an eventfd (/proc/self/fd link)
    "readlink", "readlinkat", NULL,
};
static const char *disk_calls[] = { "fdatasync", "fsync", "fallocate", "ftruncate", NULL };
static const char *disk_connect_calls[] = {
    // NBD reconnects; a TCP export's host name is looked up again (read-only opens of
    // /etc/hosts, /etc/resolv.conf and the like; glibc's stub resolver sends the A and
    // AAAA queries with one sendmmsg, and a reloaded resolv.conf without a search line
    // asks gethostname, which is uname)
    "socket", "connect", "setsockopt", "getsockname", "getpeername", "bind", "sendmmsg", "uname", NULL,
};
// The descriptor closer (VMMCore's DescriptorCloser): `close` and futexes, both common.
static const char *closer_calls[] = { NULL };
static const char **role_calls[] = { main_calls, vcpu_calls, io_calls, control_calls, disk_calls, disk_connect_calls, closer_calls };

// ioctls a running VM makes: KVM_RUN and register dumps (vCPU), interrupts and doorbell
// moves (any thread that runs device code), offloads the guest renegotiates (TAP), and
// isatty on the log stream.
static const unsigned long allowed_ioctls[] = {
    KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_IRQ_LINE, KVM_SIGNAL_MSI, KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_GSI_ROUTING,
    TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUNGETIFF, TCGETS, FIONBIO, FIONREAD,
};

static void write_all(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w; n -= (size_t)w;
    }
}

static void on_sigsys(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    int nr = info->si_syscall;
    char number[16];
    int i = (int)sizeof number - 1;
    number[i] = 0;
    unsigned v = nr < 0 ? 0u : (unsigned)nr;
    do { number[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 0);
    write_all("swiftvmm: sandbox: the ");
    write_all(thread_role ? thread_role : "unsandboxed");
    write_all(" thread made a forbidden system call: ");
    write_all(nr >= 0 && nr < MAX_SYSCALL && syscall_names[nr][0] ? syscall_names[nr] : "?");
    write_all(" (");
    write_all(&number[i]);
    write_all("); see Docs/security.md, or run with --sandbox=off to debug\n");
    syscall(SYS_exit_group, 128 + SIGSYS);
}

int csandbox_prepare(int mode, long runas_uid, long runas_gid, long runas_group_count) {
    sandbox_mode = mode;
    drop_uid = runas_uid;
    drop_gid = runas_gid;
    drop_group_count = runas_group_count;
    for (int nr = 0; nr < MAX_SYSCALL; nr++) {
        char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
        if (name) {
            strncpy(syscall_names[nr], name, sizeof syscall_names[nr] - 1);
            free(name);
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSYS, &sa, NULL) == 0 ? 0 : -errno;
}

static int allow_list(scmp_filter_ctx ctx, const char **names) {
    for (; *names; names++) {
        int nr = seccomp_syscall_resolve_name(*names);
        if (nr == __NR_SCMP_ERROR) continue; // not on this architecture
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc < 0) return rc;
    }
    return 0;
}

int csandbox_enter(int role) {
    if (role < 0 || role > CSANDBOX_CLOSER) return -EINVAL;
    scmp_filter_ctx ctx = seccomp_init(sandbox_mode == CSANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
    if (!ctx) return -ENOMEM;
    int rc = allow_list(ctx, common_calls);
    if (rc == 0) rc = allow_list(ctx, role_calls[role]);
    // Memory, never executable: nothing is loaded once the VM runs (libnbd and libvdeplug's
    // plugins are opened during setup; no new threads, so no new stacks), and code that got
    // hold of a write primitive cannot map or flip pages to run what it wrote. Refused with
    // EPERM rather than ended: glibc's name lookup in disk-connect may dlopen an NSS module
    // that nsswitch.conf names, and then fails that source cleanly.
    // (In --sandbox=log the default action already logs the executable case; libseccomp
    // refuses a rule whose action is the default one.)
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    if (rc == 0 && sandbox_mode != CSANDBOX_LOG) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(mprotect), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
    }
    // Signals to this process's own threads only (glibc's raise, pthread_kill and setxid
    // broadcast all name their own thread group).
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
    // ioctl only with the request numbers above (the main thread may also ask anything of
    // descriptors it owns while tearing down: its list has plain ioctl).
    if (rc == 0 && role != CSANDBOX_MAIN) {
        for (size_t i = 0; rc == 0 && i < sizeof allowed_ioctls / sizeof allowed_ioctls[0]; i++) {
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, allowed_ioctls[i]));
        }
    }
    // --runas: glibc makes every thread call setuid/setgid/setgroups (its setxid
    // broadcast); only to the target identity (setgroups: as many groups as the user has;
    // seccomp cannot read the list itself).
    if (rc == 0 && drop_uid >= 0 && drop_gid >= 0 && drop_group_count >= 0) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(setuid), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)drop_uid));
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(setgid), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)drop_gid));
        if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(setgroups), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)drop_group_count));
    }
    // QMP quit on serve signals this process (and only it) to stop.
    if (rc == 0 && role == CSANDBOX_CONTROL) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
    }
    // Name lookups open files read-only, nothing else: NBD reconnects to a TCP host, and
    // libslirp re-reading the host's DNS servers (/etc/resolv.conf) for DHCP and DNS.
    if (rc == 0 && (role == CSANDBOX_DISK_CONNECT || role == CSANDBOX_IO)) {
        // Read-only means no O_CREAT, O_TRUNC or O_TMPFILE either: O_RDONLY|O_TRUNC
        // empties a file, O_RDONLY|O_CREAT makes one.
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                              SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC | __O_TMPFILE, O_RDONLY));
    }
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc == 0) thread_role = role_names[role];
    return rc;
}

const char *csandbox_current_role(void) { return thread_role; }

#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/utsname.h>

long csandbox_probe(int which) {
    switch (which) {
    case 0: return open("/etc/hostname", O_RDONLY);
    case 1: { char *argv[] = { "/bin/true", NULL }; return execv("/bin/true", argv); }
    case 2: return socket(AF_INET, SOCK_STREAM, 0);
    case 3: return ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    case 4: return fork();
    case 5: return write(1, "allowed\n", 8);
    case 6: return ioctl(-1, KVM_RUN, 0);
    // Creating a file where a read-only open is allowed (in /proc, so it fails if allowed).
    case 7: return open("/proc/swiftvmm-sandbox-probe", O_RDONLY | O_CREAT, 0600);
    case 8: { struct utsname u; return uname(&u); }
    case 9: return sendmmsg(-1, NULL, 0, 0);
    // An executable mapping: -errno when refused.
    case 10: {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return -errno;
        munmap(p, 4096);
        return 0;
    }
    // Signal 0 (nothing delivered) to another process's thread, then to this thread.
    case 11: return syscall(SYS_tgkill, 1, 1, 0);
    case 12: return syscall(SYS_tgkill, getpid(), gettid(), 0);
    default: return -EINVAL;
    }
}
