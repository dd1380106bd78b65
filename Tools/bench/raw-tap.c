/* The raw limit for the TAP datapath: the same frames, the same TAP, one syscall per
 * frame, no device model. What swiftvmm's tap backend does per frame is compared to this.
 *   raw-tap tx IFNAME FRAMEFILE SECONDS KEY [BUFFERS [split]]
 *                                                  write(2) the file (vnet header + frame) in a loop;
 *                                                  with BUFFERS, from that many copies in turn (a guest's
 *                                                  ring sends from as many buffers: the bench's 256);
 *                                                  with split, writev(2) of the header from a buffer of its
 *                                                  own and the frame from the copy, as swiftvmm's TAP
 *                                                  backend writes frames over 2 KiB (the device's header,
 *                                                  checked or built in the VMM's memory, never the guest's
 *                                                  bytes, then the frame from guest memory)
 *   raw-tap rx IFNAME SECONDS OFFLOAD KEY          read(2) frames for SECONDS after the first one
 *                                                  (OFFLOAD: csum or none, as the guest negotiated)
 *   raw-tap flood DEST_IP PORT FRAME_LENGTH SECONDS   UDP datagrams making FRAME_LENGTH-byte frames
 * The TAP is opened as swiftvmm's backend opens it: IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, 12-byte header. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "common.h"

static int open_tap(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("/dev/net/tun"); exit(1); }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(1); }
    int size = VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) { perror("TUNSETVNETHDRSZ"); exit(1); }
    return fd;
}

static int tx(const char *name, const char *file, double seconds, const char *key, int buffers, int split) {
    size_t length;
    unsigned char *frame = read_file(file, &length);
    if (length <= VNET_HDR_LEN) { fprintf(stderr, "%s: shorter than the vnet header\n", file); exit(1); }
    /* Each copy on its own cache lines, as guest buffers are. */
    size_t stride = (length + 63) & ~(size_t)63;
    unsigned char *copies = malloc(stride * (size_t)buffers);
    if (!copies) { perror("malloc"); exit(1); }
    for (int b = 0; b < buffers; b++) memcpy(copies + stride * (size_t)b, frame, length);
    int fd = open_tap(name);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), t = start;
    double frames = 0, errors = 0;
    int next = 0;
    unsigned char header[VNET_HDR_LEN];
    memcpy(header, frame, VNET_HDR_LEN);
    while (t < end) {
        for (int i = 0; i < 256; i++) {
            unsigned char *copy = copies + stride * (size_t)next;
            ssize_t n;
            if (split) {
                struct iovec iov[2] = { { header, VNET_HDR_LEN }, { copy + VNET_HDR_LEN, length - VNET_HDR_LEN } };
                n = writev(fd, iov, 2);
            } else {
                n = write(fd, copy, length);
            }
            if (n == (ssize_t)length) frames++; else errors++;
            if (++next == buffers) next = 0;
        }
        t = now_ns();
    }
    if (errors) fprintf(stderr, "raw-tap tx: %.0f writes failed (last: %s)\n", errors, strerror(errno));
    report(key, "raw tap tx", frames, (double)(t - start) / 1e9, length - VNET_HDR_LEN);
    return 0;
}

static int rx(const char *name, double seconds, const char *offload, const char *key) {
    int fd = open_tap(name);
    if (strcmp(offload, "csum") == 0 && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM) < 0) { perror("TUNSETOFFLOAD"); exit(1); }
    static unsigned char buf[VNET_HDR_LEN + 65550];
    uint64_t first = 0, last = 0, deadline = now_ns() + (uint64_t)((seconds + 5) * 1e9);
    double frames = 0;
    size_t frame_length = 0;
    struct pollfd p = { .fd = fd, .events = POLLIN };
    for (;;) {
        if (poll(&p, 1, 100) < 0 && errno != EINTR) { perror("poll"); exit(1); }
        ssize_t n = read(fd, buf, sizeof buf);
        uint64_t t = now_ns();
        if (n > VNET_HDR_LEN + 14) {
            if (!first) { first = t; frame_length = (size_t)n - VNET_HDR_LEN; }
            else frames++;
            last = t;
        }
        if (first && t - first >= (uint64_t)(seconds * 1e9)) break;
        if (!first && t > deadline) break;
    }
    report(key, "raw tap rx", frames, first ? (double)(last - first) / 1e9 : 1, frame_length);
    return 0;
}

static int flood(const char *ip, int port, int frame_length, double seconds) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("socket"); exit(1); }
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1) { fprintf(stderr, "bad IP %s\n", ip); exit(1); }
    int payload = frame_length - 14 - 20 - 8;
    if (payload < 0) payload = 0;
    static char data[65536];
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end)
        for (int i = 0; i < 64; i++) (void)sendto(s, data, (size_t)payload, 0, (struct sockaddr *)&to, sizeof to);
    return 0;
}

int main(int argc, char **argv) {
    if ((argc >= 6 && argc <= 8) && !strcmp(argv[1], "tx")) {
        int buffers = argc >= 7 ? atoi(argv[6]) : 1;
        int split = argc == 8 && !strcmp(argv[7], "split");
        if (argc == 8 && !split) { fprintf(stderr, "raw-tap tx: the 7th argument can only be 'split'\n"); return 2; }
        if (buffers < 1 || buffers > 4096) { fprintf(stderr, "raw-tap tx: BUFFERS must be 1-4096\n"); return 2; }
        return tx(argv[2], argv[3], atof(argv[4]), argv[5], buffers, split);
    }
    if (argc == 6 && !strcmp(argv[1], "rx")) return rx(argv[2], atof(argv[3]), argv[4], argv[5]);
    if (argc == 6 && !strcmp(argv[1], "flood")) return flood(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: raw-tap tx IFNAME FRAMEFILE SECONDS KEY [BUFFERS [split]] | rx IFNAME SECONDS csum|none KEY | flood IP PORT FRAME_LENGTH SECONDS\n");
    return 2;
}
