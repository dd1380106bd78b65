// libnbd (Debian libnbd-dev for the header, libnbd0 at run time, 1.14+): the NBD client
// the nbd disk backend drives asynchronously. Its types and prototypes come from the
// header; the functions themselves are trampolines in loader.c that load libnbd.so.0 on
// first use, so a VM without an NBD disk never maps libnbd and what it pulls in (gnutls,
// libxml2, p11-kit, ...: 4.7 MiB of peak RSS for the mini guest, Docs/performance.md).
#include <libnbd.h>
