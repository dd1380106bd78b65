#ifndef CVDEPLUG_H
#define CVDEPLUG_H
#include <libvdeplug.h>
/// vde_open (a macro over vde_open_real) as a function, which gives up after
/// `milliseconds` (errno ETIMEDOUT, *timed_out = 1) instead of waiting for ever on a
/// switch that never answers. It briefly uses SIGUSR2 on the calling thread.
VDECONN *cvde_open_within(const char *url, const char *descr, unsigned int milliseconds, int *timed_out);
#endif
