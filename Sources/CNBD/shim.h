// libnbd (Debian libnbd-dev, 1.14+): the NBD client the nbd backend drives asynchronously.
#include <libnbd.h>
