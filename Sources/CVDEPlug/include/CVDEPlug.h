#ifndef CVDEPLUG_H
#define CVDEPLUG_H
#include <libvdeplug.h>
// vde_open is a macro over vde_open_real; give Swift a real function.
VDECONN *cvde_open(const char *url, const char *descr);
#endif
