#ifndef CKVM_H
#define CKVM_H
// ioctl is variadic and the _IO* request macros cannot be imported into Swift:
// this shim exports fixed-signature wrappers and the request numbers as constants.
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/mman.h>

static inline int ckvm_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
static inline int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

#endif
