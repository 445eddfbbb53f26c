/*
 * Counters of the paths libvfio-user moves DMA bytes on (lvu-paths.c).
 *
 * Copyright: vfio-user client project <devel@vfio-user-client.invalid>
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef LVU_PATHS_H
#define LVU_PATHS_H

#include <stdbool.h>
#include <stdint.h>

#define LVU_DMA_READ  11
#define LVU_DMA_WRITE 12

struct lvu_paths {
    /* VFIO_USER_DMA_READ/WRITE requests the library sent */
    uint64_t msgs, msg_bytes, msg_max;
    uint64_t msg_bad;           /* size field not 32 (+ count for a write) */
    int msg_fd;                 /* socket of the last one (-1: none yet) */
    /* pread()/pwrite() calls and the bytes they moved */
    uint64_t preads, pwrites, io_bytes;
    int io_fd;                  /* fd and file position of the first one */
    int64_t io_pos;
};

extern struct lvu_paths lvu_paths;

void lvu_paths_reset(void);
/* true if the library's calls reach the counting functions */
bool lvu_paths_active(void);

#endif
