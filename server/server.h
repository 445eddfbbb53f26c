/*
 * vfio-user-dma-server: shared declarations.
 *
 * The server has three parts:
 *   vfio-user-dma-server.c  socket, message framing, vfio-user commands
 *   dma.c                   the DMA region table and the three access modes
 *   device.c                the emulated PCI DMA engine (config space, BAR0)
 */
#ifndef VFIO_USER_DMA_SERVER_H
#define VFIO_USER_DMA_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- wire format (all little-endian; x86-64 only, so plain structs) ---- */

struct vu_hdr {
    uint16_t id;
    uint16_t command;
    uint32_t size;          /* whole message, header included */
    uint32_t flags;
    uint32_t error;         /* errno of a failed request, in replies */
};
_Static_assert(sizeof(struct vu_hdr) == 16, "header layout");

enum {
    VU_VERSION = 1,
    VU_DMA_MAP = 2,
    VU_DMA_UNMAP = 3,
    VU_DEVICE_GET_INFO = 4,
    VU_DEVICE_GET_REGION_INFO = 5,
    VU_DEVICE_GET_REGION_IO_FDS = 6,
    VU_DEVICE_GET_IRQ_INFO = 7,
    VU_DEVICE_SET_IRQS = 8,
    VU_REGION_READ = 9,
    VU_REGION_WRITE = 10,
    VU_DMA_READ = 11,
    VU_DMA_WRITE = 12,
    VU_DEVICE_RESET = 13,
};

#define VU_FLAG_TYPE_MASK   0xfu
#define VU_FLAG_REPLY       0x1u
#define VU_FLAG_NO_REPLY    0x10u
#define VU_FLAG_ERROR       0x20u

/* DMA_MAP flags (see docs/server.md) */
#define DMA_FLAG_READ       0x1u
#define DMA_FLAG_WRITE      0x2u
#define DMA_FLAG_MODE_MMAP  0x4u
#define DMA_FLAG_MODE_FILE  0x8u
#define DMA_UNMAP_FLAG_ALL  0x2u

/* Most fds one message may carry; more means a confused peer. */
#define VU_MAX_FDS          8
/* What we tell the client it may send us in one data transfer. */
#define VU_OUR_MAX_XFER     (1024u * 1024u)
/* Largest message we accept: a full data transfer plus its small header. */
#define VU_MAX_MSG          (VU_OUR_MAX_XFER + 64u)

struct vu_msg {
    struct vu_hdr hdr;
    uint8_t *data;          /* payload, hdr.size - 16 bytes */
    size_t len;
    int fds[VU_MAX_FDS];
    int nfds;
};

/* ---- the connection (vfio-user-dma-server.c) ---- */

struct conn {
    int sock;
    bool legacy;            /* behave like a pre-revision server */
    bool old_dma_layout;    /* DMA_READ/WRITE as QEMU 10.2.2 lays them out */
    bool negotiated;        /* VERSION done */
    bool dead;              /* protocol broken or peer gone: stop serving */
    bool broken;            /* the client violated the protocol */
    uint16_t next_id;
    uint64_t peer_max_xfer; /* the client's max_data_xfer_size */
    int depth;              /* nesting of request handling inside a DMA wait */
};

/*
 * Send a server->client request and wait for its reply; client requests
 * arriving meanwhile are served.  Returns 0 and fills *reply (caller frees
 * reply->data), or a positive errno.
 */
int conn_call(struct conn *c, uint16_t cmd, const void *payload, size_t len,
              struct vu_msg *reply);
void msg_close_fds(struct vu_msg *m);
void msg_free(struct vu_msg *m);

/* ---- DMA regions (dma.c) ---- */

enum dma_mode { MODE_MMAP, MODE_FILE_IO, MODE_MESSAGE, MODE_COUNT };

struct dma_stats {
    uint64_t bytes[MODE_COUNT];
    uint64_t ops[MODE_COUNT];
};

extern struct dma_stats dma_stats;
extern FILE *log_file;

const char *dma_mode_name(enum dma_mode m);
/* Handlers: return 0 or a positive errno for the reply. */
int dma_map(struct conn *c, struct vu_msg *m);
int dma_unmap(struct conn *c, struct vu_msg *m);
void dma_unmap_all(void);
/* Guest memory access at an IOVA; 0 or a positive errno. */
int dma_read(struct conn *c, uint64_t iova, void *buf, uint64_t len);
int dma_write(struct conn *c, uint64_t iova, const void *buf, uint64_t len);

/* ---- benchmark loop (bench.c) ---- */

/* Most repetitions one benchmark command may ask for. */
#define BENCH_MAX_ITERS     1000000u

/*
 * Move len bytes between guest memory at iova and buf, iters times, timing
 * each transfer; every repetition is checked (see docs/server.md).  Logs a
 * "bench ..." line.  0 or a positive errno.
 */
int bench_run(struct conn *c, bool to_guest, uint64_t iova, uint8_t *buf,
              uint64_t len, uint32_t iters);

/* ---- the device (device.c) ---- */

#define DEV_NUM_REGIONS     9       /* VFIO PCI layout: BAR0-5, ROM, config, VGA */
#define DEV_REGION_BAR0     0
#define DEV_REGION_CONFIG   7
#define DEV_NUM_IRQS        5       /* INTx, MSI, MSI-X, ERR, REQ */
#define DEV_IRQ_INTX        0
#define DEV_IRQ_MSI         1
#define DEV_IRQ_ERR         3

void dev_init(void);
void dev_reset(void);
uint64_t dev_region_size(unsigned index);
/* 0 or positive errno */
int dev_region_read(unsigned index, uint64_t off, void *buf, uint32_t count);
int dev_region_write(unsigned index, uint64_t off, const void *buf,
                     uint32_t count);
int dev_irq_count(unsigned index);
int dev_set_irqs(struct vu_msg *m);
/* Run a queued DMA command, if any (called outside request handling). */
void dev_run_pending(struct conn *c);
void dev_close_irqs(void);
void dev_print_stats(FILE *f);
int dev_write_stats_json(const char *path);

#endif
