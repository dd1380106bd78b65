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
#include <string.h>

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

#endif
