/* Runs a VMM command and measures what the boot and memory benchmarks compare:
 * the time from fork to the first byte the guest prints on the serial console (the
 * command's stdout), optionally the time until a marker string appears, and the peak RSS
 * of the process (wait4's ru_maxrss) when it ends.
 *   measure [-t TIMEOUT_S] [-u MARKER] [-k] -- COMMAND [ARGS...]
 * -k: stop the command (SIGTERM, then SIGKILL) once MARKER is seen (for guests that never end).
 * Prints `first-output-ms`, `marker-ms`, `maxrss-kb`, `marker-{rss,pss,anon}-kb` (smaps_rollup when
 * the marker appeared), `status`; the command's stdout goes to stderr. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

/* Rss/Pss/Anonymous of a running process (kB), from /proc/PID/smaps_rollup: peak RSS
 * counts shared library text too, so the split tells what the VMM itself holds. */
static void snapshot_memory(pid_t pid, long *rss, long *pss, long *anon) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "Rss: %ld", &v) == 1) *rss = v;
        else if (sscanf(line, "Pss: %ld", &v) == 1) *pss = v;
        else if (sscanf(line, "Anonymous: %ld", &v) == 1) *anon = v;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    double timeout = 60;
    const char *marker = NULL;
    int kill_at_marker = 0, opt;
    while ((opt = getopt(argc, argv, "t:u:k")) != -1) {
        if (opt == 't') timeout = atof(optarg);
        else if (opt == 'u') marker = optarg;
        else if (opt == 'k') kill_at_marker = 1;
        else return 2;
    }
    if (optind >= argc) { fprintf(stderr, "usage: measure [-t S] [-u MARKER] [-k] -- COMMAND...\n"); return 2; }
    int out[2];
    if (pipe(out) < 0) { perror("pipe"); return 1; }
    uint64_t start = now_ns();
    pid_t child = fork();
    if (child == 0) {
        dup2(out[1], 1);
        close(out[0]); close(out[1]);
        int null = open("/dev/null", 0);
        if (null >= 0) { dup2(null, 0); close(null); }
        execvp(argv[optind], argv + optind);
        perror(argv[optind]);
        _exit(127);
    }
    close(out[1]);
    uint64_t first = 0, seen = 0, deadline = start + (uint64_t)(timeout * 1e9);
    char window[4096 + 256];
    size_t kept = 0, marker_length = marker ? strlen(marker) : 0;
    int stopping = 0;
    long rss_at_marker = -1, pss_at_marker = -1, anon_at_marker = -1;
    struct pollfd p = { .fd = out[0], .events = POLLIN };
    for (;;) {
        uint64_t t = now_ns();
        if (t >= deadline && !stopping) { kill(child, SIGKILL); stopping = 1; }
        int r = poll(&p, 1, 50);
        if (r < 0 && errno != EINTR) break;
        if (r <= 0) continue;
        char buf[4096];
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n <= 0) break;
        t = now_ns();
        if (!first) first = t;
        fwrite(buf, 1, (size_t)n, stderr);
        if (marker && !seen) {
            /* Keep the last bytes so a marker split across reads is still found. */
            if (kept + (size_t)n >= sizeof window - 1) {
                size_t keep = marker_length < kept ? marker_length : kept;
                memmove(window, window + kept - keep, keep);
                kept = keep;
            }
            size_t take = (size_t)n < sizeof window - 1 - kept ? (size_t)n : sizeof window - 1 - kept;
            memcpy(window + kept, buf, take);
            kept += take;
            window[kept] = 0;
            if (memmem(window, kept, marker, marker_length)) {
                seen = t;
                snapshot_memory(child, &rss_at_marker, &pss_at_marker, &anon_at_marker);
                if (kill_at_marker) { kill(child, SIGTERM); stopping = 1; deadline = t + 2000000000u; }
            }
        }
    }
    int status = 0;
    struct rusage usage;
    /* Drain: the child may still run (no output left); give it until the deadline. */
    for (;;) {
        pid_t w = wait4(child, &status, WNOHANG, &usage);
        if (w == child) break;
        if (now_ns() >= deadline) { kill(child, SIGKILL); wait4(child, &status, 0, &usage); break; }
        usleep(10000);
    }
    printf("first-output-ms %.1f\n", first ? (double)(first - start) / 1e6 : -1.0);
    printf("marker-ms %.1f\n", seen ? (double)(seen - start) / 1e6 : -1.0);
    printf("maxrss-kb %ld\n", usage.ru_maxrss);
    printf("marker-rss-kb %ld\nmarker-pss-kb %ld\nmarker-anon-kb %ld\n", rss_at_marker, pss_at_marker, anon_at_marker);
    printf("status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
