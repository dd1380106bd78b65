#ifndef CFUZZSHIM_H
#define CFUZZSHIM_H
// What the fuzz targets need from Linux that Swift cannot import (memfd_create and
// file seals are glibc _GNU_SOURCE declarations).
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/eventfd.h>

/// A memfd of `size` bytes, sealed against shrinking and growing when `seal` is set
/// (as QEMU's memory-backend-memfd makes guest RAM).
static inline int cfuzz_memfd(long size, int seal) {
    int fd = (int)syscall(SYS_memfd_create, "fuzz", 0x0002 /* MFD_ALLOW_SEALING */);
    if (fd < 0) return fd;
    if (ftruncate(fd, size) != 0) { close(fd); return -1; }
    if (seal) fcntl(fd, 1024 + 9 /* F_ADD_SEALS */, 0x0002 | 0x0004 /* F_SEAL_SHRINK | F_SEAL_GROW */);
    return fd;
}
/// A non-blocking eventfd.
static inline int cfuzz_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
#endif
