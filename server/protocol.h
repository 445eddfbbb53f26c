/*
 * vfio-user message numbers and payloads that <linux/vfio.h> does not
 * have (vfio-user is not a kernel interface); flag bits and the VFIO
 * structures vfio-user reuses come from <linux/vfio.h>.
 */
#ifndef SERVER_PROTOCOL_H
#define SERVER_PROTOCOL_H

#include <linux/vfio.h>
#include <stdint.h>

enum {
    VFIO_USER_VERSION = 1,
    VFIO_USER_DMA_MAP = 2,
    VFIO_USER_DMA_UNMAP = 3,
    VFIO_USER_DEVICE_GET_INFO = 4,
    VFIO_USER_DEVICE_GET_REGION_INFO = 5,
    VFIO_USER_DEVICE_GET_REGION_IO_FDS = 6,
    VFIO_USER_DEVICE_GET_IRQ_INFO = 7,
    VFIO_USER_DEVICE_SET_IRQS = 8,
    VFIO_USER_REGION_READ = 9,
    VFIO_USER_REGION_WRITE = 10,
    VFIO_USER_DMA_READ = 11,
    VFIO_USER_DMA_WRITE = 12,
    VFIO_USER_DEVICE_RESET = 13,
};

/* DMA_MAP access-mode bits of the revision (docs/server.md); read and
 * write are VFIO_DMA_MAP_FLAG_READ/WRITE. */
#define VFIO_USER_DMA_MAP_FLAG_MMAP     0x4u
#define VFIO_USER_DMA_MAP_FLAG_FILE_IO  0x8u

struct vfio_user_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset;        /* file position of addr, with an fd */
    uint64_t addr;
    uint64_t size;
};
_Static_assert(sizeof(struct vfio_user_dma_map) == 32, "DMA_MAP layout");

struct vfio_user_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t addr;
    uint64_t size;
};
_Static_assert(sizeof(struct vfio_user_dma_unmap) == 24, "DMA_UNMAP layout");

struct vfio_user_region_access {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    /* data follows in REGION_WRITE requests and REGION_READ replies */
};
_Static_assert(sizeof(struct vfio_user_region_access) == 16, "REGION_* layout");

#endif
