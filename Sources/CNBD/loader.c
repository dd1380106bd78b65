// Loads libnbd.so.0 when the first NBD disk is opened (during setup, before the sandbox
// forbids opening files) and forwards the calls the nbd backend makes. When the library
// is missing, nbd_create returns NULL and nbd_get_error says why, which the backend
// reports as its one error line.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include "CNBD.h"

// Hidden: libnbd calls some of these names on itself (nbd_get_error, nbd_create, ...);
// exported, the executable's trampolines would interpose on libnbd's own calls.
#pragma GCC visibility push(hidden)

#define NBD_FUNCTIONS(X) \
    X(nbd_create) X(nbd_close) X(nbd_get_error) X(nbd_get_errno) \
    X(nbd_set_uri_allow_transports) X(nbd_set_uri_allow_tls) X(nbd_set_uri_allow_local_file) \
    X(nbd_set_handle_name) X(nbd_aio_connect_uri) X(nbd_poll) \
    X(nbd_get_size) X(nbd_get_block_size) X(nbd_is_read_only) X(nbd_can_flush) X(nbd_can_trim) X(nbd_can_zero) \
    X(nbd_aio_get_fd) X(nbd_aio_get_direction) X(nbd_aio_notify_read) X(nbd_aio_notify_write) \
    X(nbd_aio_is_ready) X(nbd_aio_is_dead) X(nbd_aio_is_closed) X(nbd_aio_command_completed) \
    X(nbd_aio_pread) X(nbd_aio_pwrite) X(nbd_aio_flush) X(nbd_aio_trim) X(nbd_aio_zero)

static struct {
#define FIELD(name) __typeof__(name) *name;
    NBD_FUNCTIONS(FIELD)
#undef FIELD
} real;
static int loaded;   // 1: every symbol resolved
static char load_error[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    void *lib = dlopen("libnbd.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "libnbd is not installed (apt-get install libnbd0): %s", dlerror());
        return;
    }
#define RESOLVE(name) \
    if (!(real.name = (__typeof__(name) *)dlsym(lib, #name))) { \
        snprintf(load_error, sizeof load_error, "libnbd.so.0 lacks %s (libnbd 1.14 or later needed)", #name); \
        return; \
    }
    NBD_FUNCTIONS(RESOLVE)
#undef RESOLVE
    loaded = 1;
}

static int ready(void) {
    pthread_once(&once, load);
    return loaded;
}

// Before a handle exists: these tell a missing library apart.
struct nbd_handle *nbd_create(void) {
    if (!ready()) { errno = ENOSYS; return NULL; }
    return real.nbd_create();
}
const char *nbd_get_error(void) { return ready() ? real.nbd_get_error() : load_error; }
int nbd_get_errno(void) { return ready() ? real.nbd_get_errno() : ENOSYS; }

// With a handle, the library is loaded (nbd_create succeeded).
void nbd_close(struct nbd_handle *h) { if (ready()) real.nbd_close(h); }
int nbd_set_uri_allow_transports(struct nbd_handle *h, uint32_t mask) { return real.nbd_set_uri_allow_transports(h, mask); }
int nbd_set_uri_allow_tls(struct nbd_handle *h, int tls) { return real.nbd_set_uri_allow_tls(h, tls); }
int nbd_set_uri_allow_local_file(struct nbd_handle *h, bool allow) { return real.nbd_set_uri_allow_local_file(h, allow); }
int nbd_set_handle_name(struct nbd_handle *h, const char *name) { return real.nbd_set_handle_name(h, name); }
int nbd_aio_connect_uri(struct nbd_handle *h, const char *uri) { return real.nbd_aio_connect_uri(h, uri); }
int nbd_poll(struct nbd_handle *h, int timeout) { return real.nbd_poll(h, timeout); }
int64_t nbd_get_size(struct nbd_handle *h) { return real.nbd_get_size(h); }
int64_t nbd_get_block_size(struct nbd_handle *h, int size_type) { return real.nbd_get_block_size(h, size_type); }
int nbd_is_read_only(struct nbd_handle *h) { return real.nbd_is_read_only(h); }
int nbd_can_flush(struct nbd_handle *h) { return real.nbd_can_flush(h); }
int nbd_can_trim(struct nbd_handle *h) { return real.nbd_can_trim(h); }
int nbd_can_zero(struct nbd_handle *h) { return real.nbd_can_zero(h); }
int nbd_aio_get_fd(struct nbd_handle *h) { return real.nbd_aio_get_fd(h); }
unsigned nbd_aio_get_direction(struct nbd_handle *h) { return real.nbd_aio_get_direction(h); }
int nbd_aio_notify_read(struct nbd_handle *h) { return real.nbd_aio_notify_read(h); }
int nbd_aio_notify_write(struct nbd_handle *h) { return real.nbd_aio_notify_write(h); }
int nbd_aio_is_ready(struct nbd_handle *h) { return real.nbd_aio_is_ready(h); }
int nbd_aio_is_dead(struct nbd_handle *h) { return real.nbd_aio_is_dead(h); }
int nbd_aio_is_closed(struct nbd_handle *h) { return real.nbd_aio_is_closed(h); }
int nbd_aio_command_completed(struct nbd_handle *h, uint64_t cookie) { return real.nbd_aio_command_completed(h, cookie); }
int64_t nbd_aio_pread(struct nbd_handle *h, void *buf, size_t count, uint64_t offset, nbd_completion_callback cb, uint32_t flags) {
    return real.nbd_aio_pread(h, buf, count, offset, cb, flags);
}
int64_t nbd_aio_pwrite(struct nbd_handle *h, const void *buf, size_t count, uint64_t offset, nbd_completion_callback cb, uint32_t flags) {
    return real.nbd_aio_pwrite(h, buf, count, offset, cb, flags);
}
int64_t nbd_aio_flush(struct nbd_handle *h, nbd_completion_callback cb, uint32_t flags) { return real.nbd_aio_flush(h, cb, flags); }
int64_t nbd_aio_trim(struct nbd_handle *h, uint64_t count, uint64_t offset, nbd_completion_callback cb, uint32_t flags) {
    return real.nbd_aio_trim(h, count, offset, cb, flags);
}
int64_t nbd_aio_zero(struct nbd_handle *h, uint64_t count, uint64_t offset, nbd_completion_callback cb, uint32_t flags) {
    return real.nbd_aio_zero(h, count, offset, cb, flags);
}

#pragma GCC visibility pop
