/*
 * Interop server: a minimal PCI device built on libvfio-user (the copy
 * bundled with QEMU, which predates the DMA access-mode bits).  A test drives
 * it through BAR0 registers and asks it to move data between guest memory and
 * a private buffer, either with vfio-user DMA messages (vfu_sgl_read/write)
 * or through the library's own mapping of the client's fd
 * (vfu_sgl_get/put).  Every DMA region event and every transfer result is
 * printed on stdout, one line each, so the test can synchronise on them.
 *
 * usage: lvu-interop-server SOCKET_PATH [IDLE_TIMEOUT_SECONDS]
 *
 * BAR0 (4 KiB, 32-bit registers):
 *   0x00 ADDR_LO   0x04 ADDR_HI   guest address of the transfer
 *   0x08 LEN       bytes (1 .. BUF_SIZE)
 *   0x0c SEED      pattern seed used by OP_PATTERN
 *   0x10 CMD       write: bits 0-7 op, bits 8-15 method; starts the command
 *   0x14 STATUS    0 idle, 1 pending, 2 done, 3 failed
 *   0x18 ERRNO     errno of the last failed command, else 0
 *   0x1c CRC       CRC-32 (zlib flavour) of buf[0, LEN) after the command
 *   0x20 SEQ       number of finished commands
 *
 * Copyright: vfio-user client project <devel@vfio-user-client.invalid>
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <vfio-user/libvfio-user.h>

#define BAR0_SIZE       4096
#define BUF_SIZE        (4u << 20)  /* room for transfers above 1 MiB */

enum { REG_ADDR_LO = 0x00, REG_ADDR_HI = 0x04, REG_LEN = 0x08,
       REG_SEED = 0x0c, REG_CMD = 0x10, REG_STATUS = 0x14,
       REG_ERRNO = 0x18, REG_CRC = 0x1c, REG_SEQ = 0x20 };

enum { OP_PATTERN = 1, OP_TO_GUEST = 2, OP_FROM_GUEST = 3 };
enum { METHOD_MSG = 0, METHOD_MAP = 1 };
enum { ST_IDLE = 0, ST_PENDING = 1, ST_DONE = 2, ST_FAILED = 3 };

struct dev {
    vfu_ctx_t *ctx;
    uint64_t addr;
    uint32_t len, seed, cmd, status, err, crc, seq;
    bool pending;
    bool lost;          /* the library dropped the connection mid-transfer */
    uint8_t *buf;
    dma_sg_t *sg;
};

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[i] = c;
    }
}

static uint32_t crc32_buf(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    }
    return c ^ 0xffffffffu;
}

/*
 * Word i of a pattern: a hash of (seed, i), so that a shift by any number of
 * bytes, a repeated chunk or a stale buffer is visible.  The test computes
 * the same function.
 */
static uint32_t pattern_word(uint32_t seed, uint32_t i)
{
    uint32_t w = seed ^ (i * 0x9e3779b1u);
    w ^= w >> 15;
    w *= 0x85ebca6bu;
    w ^= w >> 13;
    return w;
}

static void fill_pattern(uint8_t *buf, uint32_t len, uint32_t seed)
{
    for (uint32_t i = 0; i < len; i++) {
        buf[i] = pattern_word(seed, i / 4) >> (8 * (i % 4));
    }
}

static void log_cb(vfu_ctx_t *ctx, int level, const char *msg)
{
    (void)ctx;
    printf("lib: level=%d %s\n", level, msg);
}

static void dma_register(vfu_ctx_t *ctx, vfu_dma_info_t *info)
{
    (void)ctx;
    printf("dma-map iova=0x%" PRIxPTR " size=0x%zx mapped=%d prot=0x%x\n",
           (uintptr_t)info->iova.iov_base, info->iova.iov_len,
           info->vaddr != NULL, info->prot);
}

static void dma_unregister(vfu_ctx_t *ctx, vfu_dma_info_t *info)
{
    (void)ctx;
    printf("dma-unmap iova=0x%" PRIxPTR " size=0x%zx\n",
           (uintptr_t)info->iova.iov_base, info->iova.iov_len);
}

static ssize_t bar0_access(vfu_ctx_t *ctx, char *buf, size_t count,
                           loff_t off, bool is_write)
{
    struct dev *d = vfu_get_private(ctx);
    uint32_t v;

    /* Only aligned 32-bit accesses; anything else is a test bug. */
    if (count != 4 || off < 0 || off % 4 || off >= BAR0_SIZE) {
        errno = EINVAL;
        return -1;
    }
    if (!is_write) {
        switch (off) {
        case REG_ADDR_LO: v = (uint32_t)d->addr; break;
        case REG_ADDR_HI: v = d->addr >> 32; break;
        case REG_LEN:     v = d->len; break;
        case REG_SEED:    v = d->seed; break;
        case REG_CMD:     v = d->cmd; break;
        case REG_STATUS:  v = d->status; break;
        case REG_ERRNO:   v = d->err; break;
        case REG_CRC:     v = d->crc; break;
        case REG_SEQ:     v = d->seq; break;
        default:          v = 0; break;
        }
        memcpy(buf, &v, 4);
        return 4;
    }
    memcpy(&v, buf, 4);
    switch (off) {
    case REG_ADDR_LO: d->addr = (d->addr & ~0xffffffffull) | v; break;
    case REG_ADDR_HI: d->addr = (d->addr & 0xffffffffull) |
                                ((uint64_t)v << 32); break;
    case REG_LEN:     d->len = v; break;
    case REG_SEED:    d->seed = v; break;
    case REG_CMD:
        if (d->pending) {
            errno = EBUSY;
            return -1;
        }
        /*
         * The transfer cannot run here: the library is in the middle of
         * answering this very REGION_WRITE, and a DMA message sent now
         * would interleave with that reply.  Run it from the main loop.
         */
        d->cmd = v;
        d->pending = true;
        d->status = ST_PENDING;
        break;
    default:
        errno = EINVAL;
        return -1;
    }
    return 4;
}

/* Moves d->len bytes between guest memory at d->addr and d->buf. */
static int do_dma(struct dev *d, bool to_guest, int method)
{
    int prot = to_guest ? PROT_WRITE : PROT_READ;
    struct iovec iov;
    int n;

    errno = 0;
    n = vfu_addr_to_sgl(d->ctx, (vfu_dma_addr_t)(uintptr_t)d->addr, d->len,
                        d->sg, 1, prot);
    if (n < -1) {
        /* the range spans several DMA regions; the tests never need that */
        return E2BIG;
    }
    if (n < 0) {
        return errno ? errno : EINVAL;
    }
    if (method == METHOD_MSG) {
        /*
         * This library version sends the first request at the start of the
         * DMA region, whatever d->addr says (docs/interop-libvfio-user.md);
         * the tests only use region starts on this path.
         */
        n = to_guest ? vfu_sgl_write(d->ctx, d->sg, 1, d->buf)
                     : vfu_sgl_read(d->ctx, d->sg, 1, d->buf);
        return n < 0 ? errno : 0;
    }
    /* fails with EFAULT when the client gave no fd for this region */
    if (vfu_sgl_get(d->ctx, d->sg, &iov, 1, 0) < 0) {
        return errno;
    }
    if (iov.iov_len != d->len) {
        vfu_sgl_put(d->ctx, d->sg, &iov, 1);
        return EIO;
    }
    if (to_guest) {
        memcpy(iov.iov_base, d->buf, d->len);
    } else {
        memcpy(d->buf, iov.iov_base, d->len);
    }
    vfu_sgl_put(d->ctx, d->sg, &iov, 1);
    return 0;
}

static void run_command(struct dev *d)
{
    int op = d->cmd & 0xff, method = (d->cmd >> 8) & 0xff;
    static const char *const op_names[] = {
        [OP_PATTERN] = "pattern", [OP_TO_GUEST] = "to-guest",
        [OP_FROM_GUEST] = "from-guest",
    };
    int err = 0;

    if (op < OP_PATTERN || op > OP_FROM_GUEST ||
        (method != METHOD_MSG && method != METHOD_MAP)) {
        err = EINVAL;
    } else if (d->len == 0 || d->len > BUF_SIZE) {
        err = EINVAL;
    } else if (op == OP_PATTERN) {
        fill_pattern(d->buf, d->len, d->seed);
    } else {
        err = do_dma(d, op == OP_TO_GUEST, method);
    }
    d->err = err;
    d->lost = err == ENOTCONN;
    d->crc = (d->len && d->len <= BUF_SIZE) ? crc32_buf(d->buf, d->len) : 0;
    d->status = err ? ST_FAILED : ST_DONE;
    d->seq++;
    d->pending = false;
    printf("xfer seq=%" PRIu32 " op=%s method=%s addr=0x%" PRIx64
           " len=%" PRIu32 " status=%s errno=%d crc=0x%08" PRIx32 "\n",
           d->seq, op >= OP_PATTERN && op <= OP_FROM_GUEST ? op_names[op]
                                                          : "invalid",
           method == METHOD_MAP ? "map" : "msg", d->addr, d->len,
           err ? "fail" : "ok", err, d->crc);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits until the poll fd is readable; false once idle_s passed quietly. */
static bool wait_readable(struct dev *d, double idle_s)
{
    double deadline = now() + idle_s;

    for (;;) {
        struct pollfd p = { .fd = vfu_get_poll_fd(d->ctx), .events = POLLIN };
        double left = deadline - now();
        int r;

        if (left <= 0) {
            return false;
        }
        r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) {
            return true;
        }
        if (r < 0 && errno != EINTR) {
            return false;
        }
    }
}

static int setup(struct dev *d, const char *path)
{
    d->ctx = vfu_create_ctx(VFU_TRANS_SOCK, path, LIBVFIO_USER_FLAG_ATTACH_NB,
                            d, VFU_DEV_TYPE_PCI);
    if (!d->ctx) {
        perror("vfu_create_ctx");
        return -1;
    }
    if (vfu_setup_log(d->ctx, log_cb, LOG_INFO) < 0 ||
        vfu_pci_init(d->ctx, VFU_PCI_TYPE_CONVENTIONAL,
                     PCI_HEADER_TYPE_NORMAL, 0) < 0) {
        perror("vfu setup");
        return -1;
    }
    vfu_pci_set_id(d->ctx, 0x1234, 0x11e5, 0x1234, 0x0001);
    if (vfu_setup_region(d->ctx, VFU_PCI_DEV_BAR0_REGION_IDX, BAR0_SIZE,
                         bar0_access,
                         VFU_REGION_FLAG_RW | VFU_REGION_FLAG_MEM,
                         NULL, 0, -1, 0) < 0 ||
        vfu_setup_device_nr_irqs(d->ctx, VFU_DEV_INTX_IRQ, 1) < 0 ||
        vfu_setup_device_dma(d->ctx, dma_register, dma_unregister) < 0 ||
        vfu_realize_ctx(d->ctx) < 0) {
        perror("vfu setup");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct dev d = { 0 };
    double idle_s = 60;
    int ret = 1;

    if (argc < 2 || argc > 3 || (argc == 3 && (idle_s = atof(argv[2])) <= 0)) {
        fprintf(stderr, "usage: %s SOCKET_PATH [IDLE_TIMEOUT_SECONDS]\n",
                argv[0]);
        return 2;
    }
    /* die with the test runner rather than linger */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    setvbuf(stdout, NULL, _IOLBF, 0);
    crc_init();
    d.buf = malloc(BUF_SIZE);
    d.sg = malloc(dma_sg_size());
    if (!d.buf || !d.sg) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (setup(&d, argv[1]) < 0) {
        goto out;
    }
    printf("ready\n");

    for (;;) {
        if (!wait_readable(&d, idle_s)) {
            fprintf(stderr, "no client within %.0f s\n", idle_s);
            goto out;
        }
        if (vfu_attach_ctx(d.ctx) == 0) {
            break;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            perror("vfu_attach_ctx");
            goto out;
        }
    }
    printf("attached\n");

    for (;;) {
        if (d.pending) {
            run_command(&d);
            continue;
        }
        if (d.lost) {
            printf("disconnected\n");
            ret = 0;
            goto out;
        }
        if (!wait_readable(&d, idle_s)) {
            fprintf(stderr, "client idle for %.0f s, giving up\n", idle_s);
            goto out;
        }
        if (vfu_run_ctx(d.ctx) < 0) {
            if (errno == ENOTCONN) {
                printf("disconnected\n");
                ret = 0;
            } else {
                perror("vfu_run_ctx");
            }
            goto out;
        }
    }

out:
    if (d.ctx) {
        vfu_destroy_ctx(d.ctx);
    }
    unlink(argv[1]);
    free(d.sg);
    free(d.buf);
    return ret;
}
