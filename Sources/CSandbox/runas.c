#define _GNU_SOURCE
#include "CSandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int csandbox_hand_over_socket(const char *path, long uid, long gid) {
    // The file itself, not a name looked up again: O_PATH|O_NOFOLLOW takes what is at
    // `path` now without following a link, and the checks and the chown act on that.
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1) {
        // Not the socket this process made: something else was put in its place (a hard
        // link to another socket of ours would have a second name).
        rc = -EPERM;
    } else if (fchownat(fd, "", (uid_t)uid, (gid_t)gid, AT_EMPTY_PATH) != 0) {
        rc = -errno;
    }
    close(fd);
    return rc;
}
