/*
 * Which path a libvfio-user transfer took, seen from inside the server
 * process: the library calls pread()/pwrite() for a file I/O region and
 * sendmsg() for VFIO_USER_DMA_READ/WRITE requests.  This file defines those
 * functions in the executable, so that the library's calls land here first
 * (the dynamic linker finds the executable's definition before libc's),
 * counts them and passes them on to libc.  A transfer that moved its bytes
 * with neither went through the library's own mapping (memcpy).
 *
 * Deliberately does not include <unistd.h>: with _FILE_OFFSET_BITS=64 the
 * header renames pread() to pread64(), and both names are defined here.
 *
 * Copyright: vfio-user client project <devel@vfio-user-client.invalid>
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "lvu-paths.h"

struct lvu_paths lvu_paths;

typedef ssize_t (*rw_fn)(int, void *, size_t, off_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

/* libc's function of that name (the next definition after ours) */
static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void note_io(bool write, int fd, off_t pos, ssize_t ret)
{
    if (write) {
        lvu_paths.pwrites++;
    } else {
        lvu_paths.preads++;
    }
    if (lvu_paths.io_fd < 0) {
        lvu_paths.io_fd = fd;
        lvu_paths.io_pos = pos;
    }
    if (ret > 0) {
        lvu_paths.io_bytes += ret;
    }
}

static ssize_t do_io(const char *name, bool write, int fd, void *buf,
                     size_t n, off_t pos)
{
    rw_fn fn = (rw_fn)next(name);
    ssize_t ret = fn(fd, buf, n, pos);

    note_io(write, fd, pos, ret);
    return ret;
}

ssize_t pread(int fd, void *buf, size_t n, off_t pos)
{
    return do_io("pread", false, fd, buf, n, pos);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t pos)
{
    return do_io("pread64", false, fd, buf, n, pos);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t pos)
{
    return do_io("pwrite", true, fd, (void *)buf, n, pos);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t pos)
{
    return do_io("pwrite64", true, fd, (void *)buf, n, pos);
}

/* The first n bytes of a message spread over iovecs; false if shorter. */
static bool gather(const struct msghdr *m, uint8_t *out, size_t n,
                   size_t *total)
{
    size_t have = 0;

    *total = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++) {
        const struct iovec *v = &m->msg_iov[i];
        size_t take = v->iov_len < n - have ? v->iov_len : n - have;

        memcpy(out + have, v->iov_base, take);
        have += take;
        *total += v->iov_len;
    }
    return have == n;
}

/*
 * A vfio-user request the library sends: 16-byte header (id u16, command
 * u16, size u32, flags u32, error u32), then for DMA_READ/DMA_WRITE
 * address u64 and count u64, and for DMA_WRITE the data.
 */
static void note_msg(int fd, const struct msghdr *m)
{
    uint8_t b[32];
    uint16_t cmd;
    uint32_t size, flags;
    uint64_t count;
    size_t total;

    if (!gather(m, b, sizeof(b), &total)) {
        return;
    }
    memcpy(&cmd, b + 2, 2);
    memcpy(&size, b + 4, 4);
    memcpy(&flags, b + 8, 4);
    memcpy(&count, b + 24, 8);
    if ((flags & 0xf) != 0 || (cmd != LVU_DMA_READ && cmd != LVU_DMA_WRITE)) {
        return;             /* a reply, or not a DMA request */
    }
    lvu_paths.msgs++;
    lvu_paths.msg_fd = fd;
    lvu_paths.msg_bytes += count;
    if (count > lvu_paths.msg_max) {
        lvu_paths.msg_max = count;
    }
    if (size != total ||
        size != 32 + (cmd == LVU_DMA_WRITE ? count : 0)) {
        lvu_paths.msg_bad++;
    }
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    sendmsg_fn fn = (sendmsg_fn)next("sendmsg");

    note_msg(fd, m);
    return fn(fd, m, flags);
}

void lvu_paths_reset(void)
{
    memset(&lvu_paths, 0, sizeof(lvu_paths));
    lvu_paths.io_fd = -1;
    lvu_paths.msg_fd = -1;
}

bool lvu_paths_active(void)
{
    /* every global lookup of these names must find this file's functions */
    return dlsym(RTLD_DEFAULT, "pread64") == (void *)pread64 &&
           dlsym(RTLD_DEFAULT, "pwrite64") == (void *)pwrite64 &&
           dlsym(RTLD_DEFAULT, "pread") == (void *)pread &&
           dlsym(RTLD_DEFAULT, "pwrite") == (void *)pwrite &&
           dlsym(RTLD_DEFAULT, "sendmsg") == (void *)sendmsg;
}
