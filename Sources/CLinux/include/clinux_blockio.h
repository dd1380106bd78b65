#ifndef CLINUX_BLOCKIO_H
#define CLINUX_BLOCKIO_H
// What the block file backend needs from <fcntl.h> and <linux/fs.h> that Swift's Glibc module
// does not import: O_DIRECT and fallocate(2) are _GNU_SOURCE-only, and BLKGETSIZE64 /
// BLKSSZGET are _IOR macros. Fixed-signature wrappers and plain constants.
#include <stdint.h>

extern const int CLINUX_O_DIRECT;
extern const int CLINUX_FALLOC_KEEP_SIZE;
extern const int CLINUX_FALLOC_PUNCH_HOLE;
extern const int CLINUX_FALLOC_ZERO_RANGE;

/// fallocate(2); returns 0 or -1 with errno set.
int clinux_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// The size in bytes of the block device open on `fd` (BLKGETSIZE64); 0 or -1 with errno.
int clinux_block_device_size(int fd, uint64_t *size);

/// The logical sector size of the block device open on `fd` (BLKSSZGET); 0 or -1 with errno.
int clinux_block_device_sector_size(int fd, int *size);

/// An open-file-description lock over the whole file (F_OFD_SETLK, _GNU_SOURCE-only):
/// exclusive for a writer, shared for a reader. 0, or -1 with errno EAGAIN or EACCES when
/// another open of the file holds a conflicting one (QEMU's image locks too: they lock
/// single bytes of the same file).
int clinux_lock_whole_file(int fd, int exclusive);

/// Whether another open of the file holds a lock on a bounded range that covers the byte
/// at `offset` (F_OFD_GETLK asking for a write lock there; a lock to the end of the file,
/// such as `clinux_lock_whole_file`'s, does not count): 1 or 0, or -1 with errno.
int clinux_byte_is_range_locked(int fd, int64_t offset);

#endif
