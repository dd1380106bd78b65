#define _GNU_SOURCE
#include "CBlockIO.h"
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

const int CBLKIO_O_DIRECT = O_DIRECT;
const int CBLKIO_FALLOC_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int CBLKIO_FALLOC_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int CBLKIO_FALLOC_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;

int cblkio_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }

int cblkio_block_device_size(int fd, uint64_t *size) { return ioctl(fd, BLKGETSIZE64, size); }

int cblkio_block_device_sector_size(int fd, int *size) { return ioctl(fd, BLKSSZGET, size); }
