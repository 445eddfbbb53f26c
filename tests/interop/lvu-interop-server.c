/*
 * Interop server: a minimal PCI device built on libvfio-user.  It builds
 * against either library version the interop suites use: the copy bundled
 * with QEMU, which predates the DMA access-mode bits ("legacy"), and current
 * libvfio-user, which implements them ("upstream"; recognised by its
 * VFU_SGL_DIRECT_ACCESS flag).  A test drives it through BAR0 registers and
 * asks it to move data between guest memory and a private buffer:
 *
 *   method 0 (msg)     vfu_sgl_read/write without flags: DMA messages
 *   method 1 (map)     vfu_sgl_get/put and memcpy on the library's mapping
 *   method 2 (direct)  vfu_sgl_read/write with VFU_SGL_DIRECT_ACCESS: the
 *                      library picks the path from the region's access mode
 *                      (upstream only; EOPNOTSUPP on the legacy library)
 *
 * Every DMA region event and every transfer result is printed on stdout, one
 * line each, so the test can synchronise on them.  A transfer's line also
 * says how the library sees the region (mode, and whether vfu_sg_is_mappable)
 * and which path moved the bytes: the DMA messages the library sent, its
 * pread()/pwrite() calls (lvu-paths.c counts both); neither means memcpy on
 * the mapping.  A region's line gives the library's access mode, the kind of
 * fd it keeps (memfd, file, proc-mem for /proc/PID/mem), its access (ro, rw)
 * and the file offset.  With -d the library logs at debug level, which
 * includes the flags and offset of every DMA_MAP it receives.
 *
 * usage: lvu-interop-server [-d] SOCKET_PATH [IDLE_TIMEOUT_SECONDS]
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
 *   0x24 SCRATCH   read/write, no effect (register traffic for the tests)
 *   0x28 STRESS_DONE   iterations the stress thread finished
 *   0x2c STRESS_BAD    transfers of the stress thread that came back wrong
 *
 * Op 4 (stress) starts a second thread that runs message DMA (method 0)
 * while the main thread goes on serving the client: LEN iterations, the
 * i-th of 4 KiB << (i % 10) bytes (4 KiB .. 2 MiB); each writes the pattern
 * of SEED + i to guest memory at ADDR, reads it back and compares, then
 * reads the same length at ADDR + 2 MiB, where the test put the pattern of
 * ~SEED, and compares.  STATUS stays pending until the thread has ended;
 * it prints one "stress ..." line.  What this asks of the library and why
 * it is safe here: see stress_main().
 *
 * Copyright: vfio-user client project <devel@vfio-user-client.invalid>
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <vfio-user/libvfio-user.h>

#include "lvu-paths.h"

#ifdef VFU_SGL_DIRECT_ACCESS
#define LVU_UPSTREAM 1
#else
#define LVU_UPSTREAM 0
#endif

#define BAR0_SIZE       4096
#define BUF_SIZE        (4u << 20)  /* room for transfers above 1 MiB */

enum { REG_ADDR_LO = 0x00, REG_ADDR_HI = 0x04, REG_LEN = 0x08,
       REG_SEED = 0x0c, REG_CMD = 0x10, REG_STATUS = 0x14,
       REG_ERRNO = 0x18, REG_CRC = 0x1c, REG_SEQ = 0x20,
       REG_SCRATCH = 0x24, REG_STRESS_DONE = 0x28, REG_STRESS_BAD = 0x2c };

enum { OP_PATTERN = 1, OP_TO_GUEST = 2, OP_FROM_GUEST = 3, OP_STRESS = 4 };

#define STRESS_SIZES    10                  /* 4 KiB << 0 .. 9 */
#define STRESS_MAX      (4096u << (STRESS_SIZES - 1))
#define STRESS_ITERS_MAX 100000u

/* The stress thread's state; the main thread reads the atomics only. */
struct stress {
    pthread_t thread;
    atomic_bool running;    /* started and not yet joined */
    atomic_bool stop;       /* the main thread wants it to end */
    atomic_uint done, bad;
    uint32_t iters, seed;
    int conn_fd;            /* the main socket, to tell the twin from it */
    dma_sg_t *sg_a[STRESS_SIZES], *sg_b[STRESS_SIZES];
    uint8_t *out, *in, *pat_b;
};
enum { METHOD_MSG = 0, METHOD_MAP = 1, METHOD_DIRECT = 2 };
enum { ST_IDLE = 0, ST_PENDING = 1, ST_DONE = 2, ST_FAILED = 3 };

struct dev {
    vfu_ctx_t *ctx;
    uint64_t addr;
    uint32_t len, seed, cmd, err, crc, seq, scratch;
    _Atomic uint32_t status;    /* the stress thread sets it at its end */
    bool pending;
    bool lost;          /* the library dropped the connection mid-transfer */
    uint8_t *buf;
    dma_sg_t *sg;
    struct stress stress;
};

/*
 * The library's own record of a DMA region, as far as this server reads it.
 * Upstream libvfio-user (at the commit the harness pins) hands the DMA
 * callbacks a pointer to the vfu_dma_info_t that opens its per-region record,
 * followed by the region's access mode (0 messages, 1 mmap, 2 file I/O), the
 * fd it keeps and the file offset from DMA_MAP.  region_view() checks the
 * values against what the public API says before they are believed.
 */
struct lib_region {
    vfu_dma_info_t info;
    int access_mode;
    int fd;
    off_t offset;
};

#define MAX_REGIONS 64
static struct {
    uintptr_t iova;
    size_t len;
    const vfu_dma_info_t *info;
} regions[MAX_REGIONS];

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

static const char *const mode_names[] = { "msg", "mmap", "file-io" };

/*
 * The library's access mode, fd and offset for a region; false (mode "?")
 * if the record does not look like one.  The legacy library only knows
 * messages and mmap, told apart by the mapping.
 */
static bool region_view(const vfu_dma_info_t *info, int *mode, int *fd,
                        off_t *offset)
{
#if LVU_UPSTREAM
    const struct lib_region *r = (const struct lib_region *)info;

    *mode = r->access_mode;
    *fd = r->fd;
    *offset = r->offset;
    return (*mode == 0 || *mode == 1 || *mode == 2) &&
           (*mode == 1) == (info->vaddr != NULL) &&
           (*mode == 0) == (*fd == -1) &&
           (*fd == -1 || fcntl(*fd, F_GETFD) >= 0);
#else
    *mode = info->vaddr != NULL;
    *fd = -1;
    *offset = 0;
    return true;
#endif
}

/* "kind=K acc=A blksize=N path=P" of an fd (P last: it may hold spaces) */
static void describe_fd(int fd, char *out, size_t n)
{
    char link[64], path[256] = "?";
    const char *kind = "other", *acc = "?";
    struct stat st = { 0 };
    ssize_t len;
    int fl;
    unsigned pid;
    char tail;

    if (fd < 0) {
        snprintf(out, n, "kind=none");
        return;
    }
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof(path) - 1);
    path[len > 0 ? len : 0] = 0;
    fstat(fd, &st);
    fl = fcntl(fd, F_GETFL);
    if (fl >= 0) {
        acc = (fl & O_ACCMODE) == O_RDONLY ? "ro" :
              (fl & O_ACCMODE) == O_WRONLY ? "wo" : "rw";
    }
    if (!strncmp(path, "/memfd:", 7)) {
        kind = "memfd";
    } else if (sscanf(path, "/proc/%u/mem%c", &pid, &tail) == 1) {
        kind = "proc-mem";
    } else if (S_ISREG(st.st_mode)) {
        kind = "file";
    }
    snprintf(out, n, "kind=%s acc=%s blksize=%ld path=%s", kind, acc,
             (long)st.st_blksize, path);
}

static void dma_register(vfu_ctx_t *ctx, vfu_dma_info_t *info)
{
    char fdesc[400], offs[24] = "?";
    off_t offset;
    int mode, fd;
    bool ok = region_view(info, &mode, &fd, &offset);

    (void)ctx;
    for (int i = 0; i < MAX_REGIONS; i++) {
        if (!regions[i].info) {
            regions[i].iova = (uintptr_t)info->iova.iov_base;
            regions[i].len = info->iova.iov_len;
            regions[i].info = info;
            break;
        }
    }
    if (LVU_UPSTREAM) {
        describe_fd(ok ? fd : -1, fdesc, sizeof(fdesc));
    } else {
        /* the legacy library's record is not read: fd and offset unknown */
        snprintf(fdesc, sizeof(fdesc), "kind=unknown");
    }
    if (LVU_UPSTREAM && ok) {
        snprintf(offs, sizeof(offs), "0x%llx", (unsigned long long)offset);
    }
    printf("dma-map iova=0x%" PRIxPTR " size=0x%zx mapped=%d prot=0x%x "
           "mode=%s offset=%s page=0x%zx fd-%s\n",
           (uintptr_t)info->iova.iov_base, info->iova.iov_len,
           info->vaddr != NULL, info->prot, ok ? mode_names[mode] : "?",
           offs, info->vaddr ? info->page_size : 0, fdesc);
}

static void dma_unregister(vfu_ctx_t *ctx, vfu_dma_info_t *info)
{
    (void)ctx;
    for (int i = 0; i < MAX_REGIONS; i++) {
        if (regions[i].info == info) {
            regions[i].info = NULL;
        }
    }
    printf("dma-unmap iova=0x%" PRIxPTR " size=0x%zx\n",
           (uintptr_t)info->iova.iov_base, info->iova.iov_len);
}

/* The library's access mode of the region holding addr, as a name. */
static const char *mode_at(uint64_t addr)
{
    for (int i = 0; i < MAX_REGIONS; i++) {
        off_t offset;
        int mode, fd;

        if (regions[i].info && addr >= regions[i].iova &&
            addr - regions[i].iova < regions[i].len) {
            return region_view(regions[i].info, &mode, &fd, &offset) ?
                   mode_names[mode] : "?";
        }
    }
    return "none";
}

/* vfu_sgl_read/write of either library version */
static int sgl_rw(vfu_ctx_t *ctx, dma_sg_t *sg, void *buf, bool to_guest,
                  bool direct)
{
#if LVU_UPSTREAM
    int flags = direct ? VFU_SGL_DIRECT_ACCESS : 0;

    return to_guest ? vfu_sgl_write(ctx, sg, 1, buf, flags)
                    : vfu_sgl_read(ctx, sg, 1, buf, flags);
#else
    if (direct) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return to_guest ? vfu_sgl_write(ctx, sg, 1, buf)
                    : vfu_sgl_read(ctx, sg, 1, buf);
#endif
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
        case REG_SCRATCH: v = d->scratch; break;
        case REG_STRESS_DONE: v = atomic_load(&d->stress.done); break;
        case REG_STRESS_BAD:  v = atomic_load(&d->stress.bad); break;
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
    case REG_SCRATCH: d->scratch = v; break;
    case REG_CMD:
        if (d->pending || atomic_load(&d->stress.running)) {
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

/*
 * Moves d->len bytes between guest memory at d->addr and d->buf; *mappable
 * gets what vfu_sg_is_mappable() says of the range (-1: no sg).
 */
static int do_dma(struct dev *d, bool to_guest, int method, int *mappable)
{
    int prot = to_guest ? PROT_WRITE : PROT_READ;
    struct iovec iov;
    int n;

    *mappable = -1;
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
    *mappable = vfu_sg_is_mappable(d->ctx, d->sg);
    if (method == METHOD_MSG || method == METHOD_DIRECT) {
        /*
         * The legacy library sends the first request at the start of the
         * DMA region, whatever d->addr says (docs/interop-libvfio-user.md);
         * the tests only use region starts on that path.
         */
        n = sgl_rw(d->ctx, d->sg, d->buf, to_guest, method == METHOD_DIRECT);
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

/*
 * The stress thread.  libvfio-user is not made for threads, so this relies
 * on what the pinned version does:
 * - vfu_sgl_read/write without VFU_SGL_DIRECT_ACCESS only build DMA_READ /
 *   DMA_WRITE messages from the sg (its region pointer included) and send
 *   them with the transport's send_msg; they read the context's
 *   client_max_data_xfer_size and pending state, which the main thread does
 *   not change after VERSION and outside migration.  So the DMA map table
 *   must not change during the run: the sgs are made by the main thread
 *   before the thread starts, and the test makes no DMA_MAP/UNMAP meanwhile
 *   (QEMU sends none while the guest's memory layout stays as it is);
 * - the message id counter is a static in the library, unlocked: only this
 *   thread may do DMA while it runs (other commands get EBUSY);
 * - with the twin socket, send_msg writes the request and reads its reply
 *   on that socket, which nothing else uses; without it, on the main
 *   socket, which the main thread's vfu_run_ctx reads at the same time:
 *   either thread can take the other's message (the library warns about
 *   this, its issue 279), which the tests record as the library's known
 *   collision;
 * - a failed transfer that looks like a lost connection makes the library
 *   reset the context from this thread, racing the main thread: the thread
 *   stops at its first error;
 * - the path counters (lvu-paths.c) are written by the sending thread only:
 *   nothing else sends DMA requests during the run.
 */
static void *stress_main(void *arg)
{
    struct dev *d = arg;
    struct stress *st = &d->stress;
    uint32_t i, first_bad = UINT32_MAX;
    int err = 0;

    for (i = 0; i < st->iters && !atomic_load(&st->stop); i++) {
        int k = i % STRESS_SIZES;
        size_t len = 4096u << k;
        bool ok;

        fill_pattern(st->out, len, st->seed + i);
        if (sgl_rw(d->ctx, st->sg_a[k], st->out, true, false) < 0) {
            err = errno;
            break;
        }
        memset(st->in, 0, len);
        if (sgl_rw(d->ctx, st->sg_a[k], st->in, false, false) < 0) {
            err = errno;
            break;
        }
        ok = !memcmp(st->in, st->out, len);
        memset(st->in, 0, len);
        if (sgl_rw(d->ctx, st->sg_b[k], st->in, false, false) < 0) {
            err = errno;
            break;
        }
        ok &= !memcmp(st->in, st->pat_b, len);
        if (!ok) {
            atomic_fetch_add(&st->bad, 1);
            if (first_bad == UINT32_MAX) {
                first_bad = i;
            }
        }
        atomic_store(&st->done, i + 1);
    }
    printf("stress done=%" PRIu32 " iters=%" PRIu32 " bad=%u first-bad=%"
           PRId64 " errno=%d twin=%d msgs=%" PRIu64 " msg-bytes=%" PRIu64
           " msg-bad=%" PRIu64 "\n", i, st->iters, atomic_load(&st->bad),
           first_bad == UINT32_MAX ? (int64_t)-1 : (int64_t)first_bad, err,
           lvu_paths.msg_fd >= 0 && lvu_paths.msg_fd != st->conn_fd,
           lvu_paths.msgs, lvu_paths.msg_bytes, lvu_paths.msg_bad);
    d->err = err;
    d->seq++;
    atomic_store(&d->status, err || atomic_load(&st->bad) ? ST_FAILED : ST_DONE);
    return NULL;
}

/* Op 4: make the sgs and buffers, start the thread; an errno if not. */
static int stress_start(struct dev *d)
{
    struct stress *st = &d->stress;
    int method = (d->cmd >> 8) & 0xff;

    if (method != METHOD_MSG || d->len == 0 || d->len > STRESS_ITERS_MAX) {
        return EINVAL;
    }
    st->iters = d->len;
    st->seed = d->seed;
    st->conn_fd = vfu_get_poll_fd(d->ctx);
    atomic_store(&st->done, 0);
    atomic_store(&st->bad, 0);
    atomic_store(&st->stop, false);
    if (!st->out) {
        st->out = malloc(STRESS_MAX);
        st->in = malloc(STRESS_MAX);
        st->pat_b = malloc(STRESS_MAX);
        for (int k = 0; k < STRESS_SIZES; k++) {
            st->sg_a[k] = malloc(dma_sg_size());
            st->sg_b[k] = malloc(dma_sg_size());
            if (!st->sg_a[k] || !st->sg_b[k]) {
                return ENOMEM;
            }
        }
        if (!st->out || !st->in || !st->pat_b) {
            return ENOMEM;
        }
    }
    fill_pattern(st->pat_b, STRESS_MAX, ~d->seed);
    for (int k = 0; k < STRESS_SIZES; k++) {
        uint32_t len = 4096u << k;

        errno = 0;
        if (vfu_addr_to_sgl(d->ctx, (vfu_dma_addr_t)(uintptr_t)d->addr, len,
                            st->sg_a[k], 1, PROT_READ | PROT_WRITE) != 1 ||
            vfu_addr_to_sgl(d->ctx, (vfu_dma_addr_t)(uintptr_t)
                            (d->addr + STRESS_MAX), len, st->sg_b[k], 1,
                            PROT_READ) != 1) {
            return errno ? errno : EFAULT;
        }
    }
    lvu_paths_reset();
    atomic_store(&st->running, true);
    if (pthread_create(&st->thread, NULL, stress_main, d)) {
        atomic_store(&st->running, false);
        return EAGAIN;
    }
    return 0;
}

/* The main thread's end of a stress run: join a thread that has ended (or,
 * with force, ask it to end and wait up to 5 s); false if it still runs. */
static bool stress_reap(struct dev *d, bool force)
{
    struct stress *st = &d->stress;
    struct timespec ts;

    if (!atomic_load(&st->running)) {
        return true;
    }
    if (force) {
        atomic_store(&st->stop, true);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += force ? 5 : 0;
    if (pthread_timedjoin_np(st->thread, NULL, &ts)) {
        return false;
    }
    atomic_store(&st->running, false);
    return true;
}

static void run_command(struct dev *d)
{
    int op = d->cmd & 0xff, method = (d->cmd >> 8) & 0xff;
    static const char *const op_names[] = {
        [OP_PATTERN] = "pattern", [OP_TO_GUEST] = "to-guest",
        [OP_FROM_GUEST] = "from-guest",
    };
    static const char *const method_names[] = {
        [METHOD_MSG] = "msg", [METHOD_MAP] = "map", [METHOD_DIRECT] = "direct",
    };
    int err = 0, mappable = -1;
    bool valid_method = method >= METHOD_MSG && method <= METHOD_DIRECT;

    if (op == OP_STRESS) {
        d->pending = false;
        err = stress_start(d);
        if (err) {
            d->err = err;
            d->seq++;
            d->status = ST_FAILED;
            printf("stress done=0 errno=%d (not started)\n", err);
        }
        return;
    }
    lvu_paths_reset();
    if (op < OP_PATTERN || op > OP_FROM_GUEST || !valid_method) {
        err = EINVAL;
    } else if (d->len == 0 || d->len > BUF_SIZE) {
        err = EINVAL;
    } else if (op == OP_PATTERN) {
        fill_pattern(d->buf, d->len, d->seed);
    } else {
        err = do_dma(d, op == OP_TO_GUEST, method, &mappable);
    }
    d->err = err;
    d->lost = err == ENOTCONN;
    d->crc = (d->len && d->len <= BUF_SIZE) ? crc32_buf(d->buf, d->len) : 0;
    d->status = err ? ST_FAILED : ST_DONE;
    d->seq++;
    d->pending = false;
    printf("xfer seq=%" PRIu32 " op=%s method=%s addr=0x%" PRIx64
           " len=%" PRIu32 " mode=%s mappable=%d msgs=%" PRIu64
           " msg-bytes=%" PRIu64 " msg-max=%" PRIu64 " msg-bad=%" PRIu64
           " preads=%" PRIu64 " pwrites=%" PRIu64 " io-bytes=%" PRIu64
           " io-fd=%d io-pos=0x%" PRIx64 " status=%s errno=%d crc=0x%08"
           PRIx32 "\n",
           d->seq, op >= OP_PATTERN && op <= OP_FROM_GUEST ? op_names[op]
                                                          : "invalid",
           valid_method ? method_names[method] : "invalid", d->addr, d->len,
           op == OP_PATTERN ? "none" : mode_at(d->addr), mappable,
           lvu_paths.msgs, lvu_paths.msg_bytes, lvu_paths.msg_max,
           lvu_paths.msg_bad, lvu_paths.preads, lvu_paths.pwrites,
           lvu_paths.io_bytes, lvu_paths.io_fd, (uint64_t)lvu_paths.io_pos,
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

static int setup(struct dev *d, const char *path, int log_level)
{
    d->ctx = vfu_create_ctx(VFU_TRANS_SOCK, path, LIBVFIO_USER_FLAG_ATTACH_NB,
                            d, VFU_DEV_TYPE_PCI);
    if (!d->ctx) {
        perror("vfu_create_ctx");
        return -1;
    }
    if (vfu_setup_log(d->ctx, log_cb, log_level) < 0 ||
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
#if LVU_UPSTREAM
        vfu_setup_device_dma(d->ctx, LIBVFIO_USER_MAX_DMA_REGIONS,
                             dma_register, dma_unregister) < 0 ||
#else
        vfu_setup_device_dma(d->ctx, dma_register, dma_unregister) < 0 ||
#endif
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
    int log_level = LOG_INFO;
    int conn_fd;
    const char *prog = argv[0];
    int ret = 1;

    if (argc > 1 && !strcmp(argv[1], "-d")) {
        log_level = LOG_DEBUG;
        argc--;
        argv++;
    }
    if (argc < 2 || argc > 3 || (argc == 3 && (idle_s = atof(argv[2])) <= 0)) {
        fprintf(stderr, "usage: %s [-d] SOCKET_PATH [IDLE_TIMEOUT_SECONDS]\n",
                prog);
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
    if (!lvu_paths_active()) {
        fprintf(stderr, "the path counters do not see the library's calls\n");
        goto out;
    }
    if (setup(&d, argv[1], log_level) < 0) {
        goto out;
    }
    printf("library=%s\n", LVU_UPSTREAM ? "upstream" : "legacy");
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
    conn_fd = vfu_get_poll_fd(d.ctx);

    for (;;) {
        if (d.pending) {
            run_command(&d);
            continue;
        }
        stress_reap(&d, false);
        /*
         * The library may reset the connection inside vfu_run_ctx() without
         * saying so (a reply it could not send); it then polls its listening
         * socket again.
         */
        if (d.lost || vfu_get_poll_fd(d.ctx) != conn_fd) {
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
    /* a stress thread that will not end keeps the context: leave it be */
    if (d.ctx && stress_reap(&d, true)) {
        vfu_destroy_ctx(d.ctx);
    }
    unlink(argv[1]);
    free(d.sg);
    free(d.buf);
    return ret;
}
