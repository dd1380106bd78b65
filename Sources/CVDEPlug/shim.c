#include <stddef.h>
#include "CVDEPlug.h"
VDECONN *cvde_open(const char *url, const char *descr) { return vde_open((char *)url, (char *)descr, NULL); }
