/* The raw limit for the user-mode (libslirp) datapath: the same frames handed straight
 * to slirp_input on one thread, with libslirp's poll protocol run every 64 frames, no
 * device model and no event loop.
 *   raw-slirp tx FRAMEFILE SECONDS KEY
 * Configured as swiftvmm's user backend is by default: 10.0.2.0/24, host 10.0.2.2,
 * IPv6 on, MTU/MRU 1500. Frames to 10.0.2.2 reach the host's loopback through a socket. */
#include <arpa/inet.h>
#include <poll.h>
#include <slirp/libslirp.h>
#include <string.h>
#include "common.h"

static double delivered;
static struct pollfd fds[256];
static int nfds;

static ssize_t send_packet(const void *buf, size_t len, void *opaque) { (void)buf; (void)opaque; delivered++; return (ssize_t)len; }
static void guest_error(const char *msg, void *opaque) { (void)opaque; fprintf(stderr, "slirp: %s\n", msg); }
static int64_t clock_ns(void *opaque) { (void)opaque; return (int64_t)now_ns(); }
static void *timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque) { (void)cb; (void)cb_opaque; (void)opaque; static int t; return &t; }
static void timer_free(void *timer, void *opaque) { (void)timer; (void)opaque; }
static void timer_mod(void *timer, int64_t expire, void *opaque) { (void)timer; (void)expire; (void)opaque; }
static void register_fd(int fd, void *opaque) { (void)fd; (void)opaque; }
static void notify(void *opaque) { (void)opaque; }

static int add_poll(int fd, int events, void *opaque) {
    (void)opaque;
    if (nfds == 256) return -1;
    short e = 0;
    if (events & SLIRP_POLL_IN) e |= POLLIN;
    if (events & SLIRP_POLL_OUT) e |= POLLOUT;
    if (events & SLIRP_POLL_PRI) e |= POLLPRI;
    fds[nfds] = (struct pollfd){ .fd = fd, .events = e };
    return nfds++;
}

static int get_revents(int idx, void *opaque) {
    (void)opaque;
    short r = fds[idx].revents;
    int e = 0;
    if (r & POLLIN) e |= SLIRP_POLL_IN;
    if (r & POLLOUT) e |= SLIRP_POLL_OUT;
    if (r & POLLPRI) e |= SLIRP_POLL_PRI;
    if (r & POLLERR) e |= SLIRP_POLL_ERR;
    if (r & POLLHUP) e |= SLIRP_POLL_HUP;
    return e;
}

static void cycle(Slirp *slirp) {
    uint32_t timeout = 0;
    nfds = 0;
    slirp_pollfds_fill(slirp, &timeout, add_poll, NULL);
    int r = poll(fds, (nfds_t)nfds, 0);
    slirp_pollfds_poll(slirp, r < 0, get_revents, NULL);
}

int main(int argc, char **argv) {
    if (argc != 5 || strcmp(argv[1], "tx")) { fprintf(stderr, "usage: raw-slirp tx FRAMEFILE SECONDS KEY\n"); return 2; }
    size_t length;
    unsigned char *buf = read_file(argv[2], &length);
    const unsigned char *frame = buf + VNET_HDR_LEN;
    int frame_length = (int)(length - VNET_HDR_LEN);
    SlirpConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.version = 4;
    cfg.in_enabled = true;
    inet_pton(AF_INET, "10.0.2.0", &cfg.vnetwork);
    inet_pton(AF_INET, "255.255.255.0", &cfg.vnetmask);
    inet_pton(AF_INET, "10.0.2.2", &cfg.vhost);
    inet_pton(AF_INET, "10.0.2.15", &cfg.vdhcp_start);
    inet_pton(AF_INET, "10.0.2.3", &cfg.vnameserver);
    cfg.in6_enabled = true;
    inet_pton(AF_INET6, "fec0::", &cfg.vprefix_addr6);
    cfg.vprefix_len = 64;
    inet_pton(AF_INET6, "fec0::2", &cfg.vhost6);
    inet_pton(AF_INET6, "fec0::3", &cfg.vnameserver6);
    cfg.if_mtu = 1500;
    cfg.if_mru = 1500;
    static const SlirpCb callbacks = {
        .send_packet = send_packet, .guest_error = guest_error, .clock_get_ns = clock_ns, .timer_new = timer_new,
        .timer_free = timer_free, .timer_mod = timer_mod, .register_poll_fd = register_fd, .unregister_poll_fd = register_fd,
        .notify = notify,
    };
    Slirp *slirp = slirp_new(&cfg, &callbacks, NULL);
    if (!slirp) { fprintf(stderr, "slirp_new failed\n"); return 1; }
    double seconds = atof(argv[3]), frames = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), t = start;
    while (t < end) {
        for (int i = 0; i < 64; i++) slirp_input(slirp, frame, frame_length);
        frames += 64;
        cycle(slirp);
        t = now_ns();
    }
    report(argv[4], "raw slirp tx", frames, (double)(t - start) / 1e9, (size_t)frame_length);
    slirp_cleanup(slirp);
    return 0;
}
