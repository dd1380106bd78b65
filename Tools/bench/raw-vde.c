/* The raw limit for the VDE datapath: libvdeplug directly on the same switch, one
 * vde_send/vde_recv per frame, no device model.
 *   raw-vde tx URL FRAMEFILE SECONDS KEY     send the file's frame (after its 12-byte vnet header) in a loop
 *   raw-vde rx URL SECONDS KEY               receive for SECONDS after the first frame
 *   raw-vde flood URL FRAMEFILE SECONDS      another port producing frames for an rx run */
#include <errno.h>
#include <libvdeplug.h>
#include <poll.h>
#include <string.h>
#include "common.h"

static VDECONN *connect_switch(const char *url) {
    VDECONN *c = vde_open((char *)url, "swiftvmm-raw-vde", NULL);
    if (!c) { fprintf(stderr, "vde_open %s: %s\n", url, strerror(errno)); exit(1); }
    return c;
}

static int tx(const char *url, const char *file, double seconds, const char *key, int quiet) {
    size_t length;
    unsigned char *buf = read_file(file, &length);
    VDECONN *c = connect_switch(url);
    const unsigned char *frame = buf + VNET_HDR_LEN;
    size_t frame_length = length - VNET_HDR_LEN;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), t = start;
    double frames = 0;
    while (t < end) {
        for (int i = 0; i < 64; i++) if (vde_send(c, frame, frame_length, 0) == (ssize_t)frame_length) frames++;
        t = now_ns();
    }
    if (!quiet) report(key, "raw vde tx", frames, (double)(t - start) / 1e9, frame_length);
    vde_close(c);
    return 0;
}

static int rx(const char *url, double seconds, const char *key) {
    VDECONN *c = connect_switch(url);
    static unsigned char buf[65550];
    struct pollfd p = { .fd = vde_datafd(c), .events = POLLIN };
    uint64_t first = 0, last = 0, deadline = now_ns() + (uint64_t)((seconds + 5) * 1e9);
    double frames = 0;
    size_t frame_length = 0;
    for (;;) {
        if (poll(&p, 1, 100) < 0 && errno != EINTR) { perror("poll"); exit(1); }
        uint64_t t = now_ns();
        if (p.revents & POLLIN) {
            ssize_t n = vde_recv(c, buf, sizeof buf, 0);
            t = now_ns();
            if (n > 14) {
                if (!first) { first = t; frame_length = (size_t)n; } else frames++;
                last = t;
            }
        }
        if (first && t - first >= (uint64_t)(seconds * 1e9)) break;
        if (!first && t > deadline) break;
    }
    report(key, "raw vde rx", frames, first ? (double)(last - first) / 1e9 : 1, frame_length);
    vde_close(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "tx")) return tx(argv[2], argv[3], atof(argv[4]), argv[5], 0);
    if (argc == 5 && !strcmp(argv[1], "rx")) return rx(argv[2], atof(argv[3]), argv[4]);
    if (argc == 5 && !strcmp(argv[1], "flood")) return tx(argv[2], argv[3], atof(argv[4]), "flood", 1);
    fprintf(stderr, "usage: raw-vde tx URL FRAMEFILE SECONDS KEY | rx URL SECONDS KEY | flood URL FRAMEFILE SECONDS\n");
    return 2;
}
