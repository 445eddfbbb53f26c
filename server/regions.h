/*
 * The DMA region table and guest memory access through it.  Each region
 * is reached in one of three ways: a mapping of the client's fd, file I/O
 * on the client's fd, or DMA_READ/DMA_WRITE messages (msgdma.h).
 */
#ifndef SERVER_REGIONS_H
#define SERVER_REGIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

enum dma_mode { MODE_MMAP, MODE_FILE_IO, MODE_MESSAGE, MODE_COUNT };

#define DMA_PROT_READ   0x1u
#define DMA_PROT_WRITE  0x2u
#define MAX_REGIONS     1024    /* the max_dma_maps we advertise */

/* Bytes moved and operations (memcpy, pread/pwrite call, message) per mode. */
struct dma_stats {
    uint64_t bytes[MODE_COUNT];
    uint64_t ops[MODE_COUNT];
};

const char *dma_mode_name(enum dma_mode m);
const struct dma_stats *dma_stats(void);

/*
 * Add [iova, iova + size) with prot (DMA_PROT_*), reached in mode.  fd and
 * offset (the file position of iova) for MODE_MMAP and MODE_FILE_IO, fd -1
 * for MODE_MESSAGE.  MODE_MMAP maps the fd now (the caller keeps the fd);
 * MODE_FILE_IO keeps the fd on success.  0 or a positive errno.
 */
int region_add(uint64_t iova, uint64_t size, uint32_t prot,
               enum dma_mode mode, int fd, uint64_t offset);
/* Remove the regions inside [iova, iova + size): EINVAL (and nothing
 * removed) if the range cuts one. */
int region_remove_range(uint64_t iova, uint64_t size);
/* Remove every region; logged as client unmaps unless quiet (shutdown). */
void region_remove_all(bool quiet);

/* Guest memory access at an IOVA, region by region; 0 or a positive errno.
 * Message-mode pieces go to the client through c. */
int dma_read(struct conn *c, uint64_t iova, void *buf, uint64_t len);
int dma_write(struct conn *c, uint64_t iova, const void *buf, uint64_t len);

#endif
