/*
 * The DMA engine's interface as the guest sees it: PCI ids, BAR0 register
 * map, commands and status bits (docs/server.md).  Included by the device
 * model (server/device.c) and by the in-guest test program (guest/dmatest.c);
 * tests/lib/dmaengine.py reads its numeric defines for the Python tests.
 */
#ifndef DMA_ENGINE_H
#define DMA_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define DMAENG_VENDOR_ID        0x1af4  /* 1af4:10f0-10ff: free for experiments */
#define DMAENG_DEVICE_ID        0x10f5
#define DMAENG_ID_VALUE         0x31414d44u     /* "DMA1" in REG_ID */
#define DMAENG_VERSION_VALUE    1u
#define DMAENG_BAR0_SIZE        4096u
#define DMAENG_BUF_SIZE         (4u * 1024 * 1024)
#define DMAENG_MAX_BENCH_ITERS  1000000u

/* BAR0 registers (32-bit; the pairs also read as 64-bit) */
#define DMAENG_REG_ID           0x00
#define DMAENG_REG_VERSION      0x04
#define DMAENG_REG_SRC          0x08    /* lo, hi at +4 */
#define DMAENG_REG_DST          0x10    /* lo, hi at +4 */
#define DMAENG_REG_LEN          0x18
#define DMAENG_REG_CMD          0x1c
#define DMAENG_REG_STATUS       0x20
#define DMAENG_REG_ERROR        0x24
#define DMAENG_REG_IRQ_STATUS   0x28
#define DMAENG_REG_IRQ_CTRL     0x2c
#define DMAENG_REG_BUF_SIZE     0x30
#define DMAENG_REG_IRQ_COUNT    0x34
#define DMAENG_REG_CSUM         0x38    /* lo, hi at +4 */
#define DMAENG_REG_COUNTERS     0x40    /* per access mode m: bytes u64 at */
#define DMAENG_COUNTER_STRIDE   16      /* +16*m, operations u64 at +16*m+8 */
#define DMAENG_NUM_MODES        3       /* 0 mmap, 1 file I/O, 2 messages */
#define DMAENG_REG_CMD_COUNT    0x70
#define DMAENG_REG_BENCH_ITERS  0x74

/* values written to REG_CMD */
#define DMAENG_CMD_TO_BUF       1       /* guest SRC -> buffer offset DST */
#define DMAENG_CMD_FROM_BUF     2       /* buffer offset SRC -> guest DST */
#define DMAENG_CMD_COPY         3       /* guest SRC -> guest DST */
#define DMAENG_CMD_BENCH_READ   4       /* like 1, BENCH_ITERS times, timed */
#define DMAENG_CMD_BENCH_WRITE  5       /* like 2, BENCH_ITERS times, timed */

/* REG_STATUS bits (done and error are write-1-to-clear) */
#define DMAENG_STATUS_BUSY      0x1u
#define DMAENG_STATUS_DONE      0x2u
#define DMAENG_STATUS_ERROR     0x4u

/* REG_IRQ_STATUS / REG_IRQ_CTRL bit */
#define DMAENG_IRQ_COMPLETION   0x1u

/* REG_CSUM: 64-bit FNV-1a of the bytes the last command moved. */
static inline uint64_t dmaeng_fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    while (n--) {
        h = (h ^ *p++) * 0x100000001b3ull;
    }
    return h;
}

#endif
