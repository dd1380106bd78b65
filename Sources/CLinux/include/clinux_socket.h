#ifndef CLINUX_SOCKET_H
#define CLINUX_SOCKET_H
// SCM_RIGHTS descriptor passing: the CMSG_* macros cannot be imported into Swift.
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include <fcntl.h>
#include <sys/syscall.h>

// The most descriptors one message can carry: the kernel's SCM_MAX_FD. With room for all
// of them none is dropped by the kernel, whose release of a dropped file would run in the
// receiving thread (and can wait on the sender: DescriptorCloser in VMMCore).
#define CLINUX_MAX_PASSED_FDS 253

// File seals (linux/fcntl.h; glibc exposes them only under _GNU_SOURCE).
#ifndef F_GET_SEALS
#define F_GET_SEALS (1024 + 10)
#endif
#ifndef F_SEAL_SHRINK
#define F_SEAL_SHRINK 0x0002
#endif
static const int CLINUX_F_GET_SEALS = F_GET_SEALS;
static const int CLINUX_F_SEAL_SHRINK = F_SEAL_SHRINK;

/// memfd_create(2) (glibc declares it only under _GNU_SOURCE).
static inline int clinux_memfd_create(const char *name, unsigned int flags) { return (int)syscall(SYS_memfd_create, name, flags); }

/// recvmsg of up to `len` bytes, collecting SCM_RIGHTS descriptors (close-on-exec) into
/// `fds`, which has room for CLINUX_MAX_PASSED_FDS; `*nfds` says how many came.
/// `*truncated` is set when more than `max_fds` came (the caller closes the rest, with
/// VMMCore's DescriptorCloser) or the kernel had to drop some. `flags` adds recvmsg flags
/// (MSG_DONTWAIT). Returns recvmsg's result.
static inline ssize_t clinux_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated, int flags) {
    union { char space[CMSG_SPACE(sizeof(int) * CLINUX_MAX_PASSED_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    *nfds = 0;
    *truncated = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *received = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, received + i, sizeof fd);
            if (*nfds < CLINUX_MAX_PASSED_FDS) fds[(*nfds)++] = fd; else close(fd);
            if (*nfds > max_fds) *truncated = 1;
        }
    }
    return n;
}

/// sendmsg of `len` bytes with `nfds` descriptors attached (none when 0).
static inline ssize_t clinux_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    union { char space[CMSG_SPACE(sizeof(int) * CLINUX_MAX_PASSED_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > CLINUX_MAX_PASSED_FDS) { errno = EINVAL; return -1; }
        memset(control.space, 0, sizeof control.space);
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

/// Fills a sockaddr_un with `path`; returns -1 if it does not fit (sun_path is 108 bytes).
static inline int clinux_sockaddr_un(struct sockaddr_un *addr, const char *path) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof addr->sun_path) return -1;
    memcpy(addr->sun_path, path, n);
    return 0;
}
#endif
