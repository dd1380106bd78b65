#ifndef CLINUX_H
#define CLINUX_H
// The Linux interfaces Swift cannot import directly, for every layer that is not KVM:
// ioctl (variadic) and the _IO* request macros as fixed-signature wrappers and
// constants, epoll/eventfd/timerfd/memfd, UNIX-socket fd passing, TUN/TAP, and the
// file and block-device calls of the block file backend.
#include "clinux_socket.h"
#include "clinux_blockio.h"
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <string.h>

// ---- Frame I/O without glibc's cancellation bookkeeping ----
// In a process with more than one thread glibc's read/write/writev are cancellation
// points: each call switches the thread's asynchronous cancellation on and off again,
// two atomic compare-and-swaps on its cancel state around the system call (nptl
// __pthread_enable_asynccancel / __pthread_disable_asynccancel). On a TAP that is done
// per frame; perf of a 9014-byte virtio-net send put the pair at 1.7 % of all samples,
// about 40 ns a frame on the Xeon here. Nothing in swiftvmm uses pthread_cancel, so the
// frame paths call the kernel directly (syscall(2) sets errno as the wrappers do).
static inline ssize_t clinux_read(int fd, void *buf, size_t count) {
    return (ssize_t)syscall(SYS_read, fd, buf, count);
}
static inline ssize_t clinux_write(int fd, const void *buf, size_t count) {
    return (ssize_t)syscall(SYS_write, fd, buf, count);
}
static inline ssize_t clinux_writev(int fd, const struct iovec *iov, int iovcnt) {
    return (ssize_t)syscall(SYS_writev, fd, iov, iovcnt);
}

// ---- Entropy ----
// getrandom(2): <sys/random.h> is not part of Glibc's Swift module map.
#include <sys/random.h>
static inline ssize_t clinux_getrandom(void *buf, size_t count, unsigned int flags) {
    return getrandom(buf, count, flags);
}
/// Adds 1 to an eventfd's counter (an interrupt to a vfio-user client, a loop wake-up).
static inline int clinux_eventfd_signal(int fd) {
    uint64_t one = 1;
    return syscall(SYS_write, fd, &one, sizeof one) == (long)sizeof one ? 0 : -1;
}

// ---- TUN/TAP (used by NetBackends' tap backend) ----
// The request numbers are _IOW macros Swift cannot import; struct ifreq's fields are
// macros over unions. These helpers take and give plain values.
static const unsigned long CLINUX_TUNSETIFF = TUNSETIFF;
static const unsigned long CLINUX_TUNGETIFF = TUNGETIFF;
static const unsigned long CLINUX_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
static const unsigned long CLINUX_TUNSETOFFLOAD = TUNSETOFFLOAD;
static const unsigned long CLINUX_TUNSETPERSIST = TUNSETPERSIST;

/// TUNSETIFF with `name` (may be empty: the kernel picks tapN) and `flags`; the name the
/// kernel chose is copied to `out_name` (IFNAMSIZ bytes). Returns ioctl's result.
static inline int clinux_tun_set_iff(int fd, const char *name, short flags, char *out_name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = flags;
    int r = ioctl(fd, TUNSETIFF, &ifr);
    if (r == 0 && out_name) { memcpy(out_name, ifr.ifr_name, IFNAMSIZ); out_name[IFNAMSIZ - 1] = 0; }
    return r;
}

/// TUNGETIFF: the interface name (IFNAMSIZ bytes) and flags of an open TUN/TAP fd
/// (one passed in by a parent process or over QMP). Returns ioctl's result.
static inline int clinux_tun_get_iff(int fd, char *out_name, short *flags) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int r = ioctl(fd, TUNGETIFF, &ifr);
    if (r == 0) { memcpy(out_name, ifr.ifr_name, IFNAMSIZ); out_name[IFNAMSIZ - 1] = 0; *flags = ifr.ifr_flags; }
    return r;
}

static inline int clinux_tun_set_vnet_hdr_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }
static inline int clinux_tun_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }

/* Whether the CPU reports FSRM (Fast Short REP MOV, CPUID leaf 7, EDX bit 4). glibc's
 * memmove then avoids `rep movsb` between buffers a short distance apart modulo 4 KiB
 * (cpu_features.c: Avoid_Short_Distance_REP_MOVSB), so its copies need no help there
 * (VMMCore's ByteCopy). */
#if defined(__x86_64__)
#include <cpuid.h>
static inline int clinux_cpu_has_fsrm(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (int)((d >> 4) & 1);
}
#else
static inline int clinux_cpu_has_fsrm(void) { return 0; }
#endif

#endif
