#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>
#include "CVDEPlug.h"

/* Delivered to the opening thread only; the handler does nothing, and is installed
 * without SA_RESTART so that the call it interrupts fails with EINTR. */
#define CVDE_WAKE_SIGNAL SIGUSR2

static void cvde_wake(int signo) { (void)signo; }

static long long cvde_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

VDECONN *cvde_open_within(const char *url, const char *descr, unsigned int milliseconds, int *timed_out) {
    *timed_out = 0;
    if (milliseconds == 0) milliseconds = 1; /* a zero it_value would disarm the timer */
    /* libvdeplug's handshake with a vde_switch (libvdeplug_vde.c, vde_vde_open) connects
     * to its control socket and waits in a plain recv for the answer: a switch that accepts
     * and never answers blocks the caller for ever. A timer signal to this thread makes
     * that connect or recv fail with EINTR, and vde_open then closes its sockets and
     * unlinks its data socket. After the deadline the timer fires every 100 ms, so a
     * signal that lands just before the blocking call is followed by another. */
    struct sigaction action = {0};
    action.sa_handler = cvde_wake;
    sigemptyset(&action.sa_mask);
    sigaction(CVDE_WAKE_SIGNAL, &action, NULL);
    sigset_t wake, saved;
    sigemptyset(&wake);
    sigaddset(&wake, CVDE_WAKE_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &wake, &saved);
    struct sigevent event = {0};
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = CVDE_WAKE_SIGNAL;
    event._sigev_un._tid = gettid();   /* sigev_notify_thread_id: glibc 2.36 names no macro for it */
    timer_t timer;
    int armed = timer_create(CLOCK_MONOTONIC, &event, &timer) == 0;
    if (armed) {
        struct itimerspec when = {
            .it_value = { .tv_sec = milliseconds / 1000, .tv_nsec = (long)(milliseconds % 1000) * 1000000 },
            .it_interval = { .tv_sec = 0, .tv_nsec = 100000000 },
        };
        timer_settime(timer, 0, &when, NULL);
    }
    long long start = cvde_now_ms();
    VDECONN *connection = vde_open((char *)url, (char *)descr, NULL);
    int error = errno;
    if (armed) timer_delete(timer);
    /* A signal generated before timer_delete was delivered while unblocked: the handler
     * stays installed, so none can reach the default action (termination) later. */
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (connection == NULL && cvde_now_ms() - start >= (long long)milliseconds) {
        *timed_out = 1;
        error = ETIMEDOUT;
    }
    errno = error;
    return connection;
}
