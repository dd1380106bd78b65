#ifndef CKVM_H
#define CKVM_H
// ioctl is variadic and the _IO* request macros cannot be imported into Swift:
// this shim exports fixed-signature wrappers and the request numbers as constants.
#include <linux/kvm.h>
#include "ckvm_kvm.h"
#include "ckvm_socket.h"
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/mman.h>
#include <string.h>

static inline int ckvm_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
static inline int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

// ---- TUN/TAP (used by NetBackends' tap backend) ----
// The request numbers are _IOW macros Swift cannot import; struct ifreq's fields are
// macros over unions. These helpers take and give plain values.
static const unsigned long CKVM_TUNSETIFF = TUNSETIFF;
static const unsigned long CKVM_TUNGETIFF = TUNGETIFF;
static const unsigned long CKVM_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
static const unsigned long CKVM_TUNSETOFFLOAD = TUNSETOFFLOAD;
static const unsigned long CKVM_TUNSETPERSIST = TUNSETPERSIST;

/// TUNSETIFF with `name` (may be empty: the kernel picks tapN) and `flags`; the name the
/// kernel chose is copied to `out_name` (IFNAMSIZ bytes). Returns ioctl's result.
static inline int ckvm_tun_set_iff(int fd, const char *name, short flags, char *out_name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = flags;
    int r = ioctl(fd, TUNSETIFF, &ifr);
    if (r == 0 && out_name) { memcpy(out_name, ifr.ifr_name, IFNAMSIZ); out_name[IFNAMSIZ - 1] = 0; }
    return r;
}

static inline int ckvm_tun_set_vnet_hdr_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }
static inline int ckvm_tun_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }

#endif
