#ifndef CKVM_H
#define CKVM_H
// KVM's interface for the KVM platform only: ioctl (variadic) and the KVM request
// numbers as fixed-signature wrappers and constants (ckvm_kvm.h). Everything else Linux
// offers the other layers is in CLinux.
#include <linux/kvm.h>
#include "ckvm_kvm.h"
#include <sys/ioctl.h>
#include <stdint.h>

static inline int ckvm_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
static inline int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

#endif
