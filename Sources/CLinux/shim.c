#define _GNU_SOURCE
#include "CLinux.h"
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

const int CLINUX_O_DIRECT = O_DIRECT;
const int CLINUX_FALLOC_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int CLINUX_FALLOC_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int CLINUX_FALLOC_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;

int clinux_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }

int clinux_block_device_size(int fd, uint64_t *size) { return ioctl(fd, BLKGETSIZE64, size); }

int clinux_block_device_sector_size(int fd, int *size) { return ioctl(fd, BLKSSZGET, size); }

int clinux_lock_whole_file(int fd, int exclusive) {
    struct flock lock = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int clinux_byte_is_range_locked(int fd, int64_t offset) {
    struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = 1 };
    if (fcntl(fd, F_OFD_GETLK, &lock) != 0) return -1;
    return lock.l_type != F_UNLCK && lock.l_len != 0;
}
