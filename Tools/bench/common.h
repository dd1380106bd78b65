/* Shared helpers of the raw limit programs (Tools/bench/raw-*.c): timing, frame files,
 * and the `BENCH key value` lines Tools/bench/run collects. */
#ifndef SWIFTVMM_BENCH_COMMON_H
#define SWIFTVMM_BENCH_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Reads a whole file (a frame written by `swiftvmm-bench frames`) into a malloc'd buffer. */
static inline unsigned char *read_file(const char *path, size_t *length) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: short read\n", path); exit(1); }
    fclose(f);
    *length = (size_t)n;
    return buf;
}

static inline void report(const char *key, const char *what, double frames, double seconds, size_t frame_length) {
    double fps = seconds > 0 ? frames / seconds : 0;
    printf("BENCH %s.fps %.0f\n", key, fps);
    printf("BENCH %s.gbps %.4f\n", key, fps * (double)frame_length * 8 / 1e9);
    printf("%s: %.0f frames/s, %.3f Gbit/s\n", what, fps, fps * (double)frame_length * 8 / 1e9);
}

#define VNET_HDR_LEN 12
#endif
