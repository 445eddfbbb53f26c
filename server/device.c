/*
 * The emulated device: a PCI DMA engine with a 4 MiB internal buffer.
 * Register map and behaviour are documented in docs/server.md.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

#define VENDOR_ID       0x1af4  /* 1af4:10f0-10ff is free for experiments */
#define DEVICE_ID       0x10f5
#define CONFIG_SIZE     256
#define BAR0_SIZE       4096
#define BUF_SIZE        (4u * 1024 * 1024)
#define MSI_CAP         0x40

#define CMD_MEMORY      0x0002
#define CMD_MASTER      0x0004
#define CMD_INTX_OFF    0x0400
#define STATUS_INTX     0x0008
#define STATUS_CAPS     0x0010

/* BAR0 register offsets */
enum {
    REG_ID = 0x00, REG_VERSION = 0x04,
    REG_SRC_LO = 0x08, REG_SRC_HI = 0x0c, REG_DST_LO = 0x10, REG_DST_HI = 0x14,
    REG_LEN = 0x18, REG_CMD = 0x1c, REG_STATUS = 0x20, REG_ERROR = 0x24,
    REG_IRQ_STATUS = 0x28, REG_IRQ_CTRL = 0x2c, REG_BUF_SIZE = 0x30,
    REG_IRQ_COUNT = 0x34, REG_CSUM_LO = 0x38, REG_CSUM_HI = 0x3c,
    REG_COUNTERS = 0x40,    /* 6 x u64: mmap/file-io/message bytes and ops */
    REG_CMD_COUNT = 0x70, REG_BENCH_ITERS = 0x74,
};
#define DEV_ID_VALUE    0x31414d44u     /* "DMA1" */

enum { OP_TO_BUF = 1, OP_FROM_BUF = 2, OP_COPY = 3, OP_BENCH_READ = 4,
       OP_BENCH_WRITE = 5 };
#define ST_BUSY  0x1u
#define ST_DONE  0x2u
#define ST_ERROR 0x4u

static struct {
    uint8_t config[CONFIG_SIZE];
    uint8_t wmask[CONFIG_SIZE];
    uint64_t src, dst;
    uint32_t len, cmd, status, error, irq_ctrl;
    uint32_t bench_iters;       /* repetitions of a benchmark command */
    uint32_t pending;           /* command waiting for dev_run_pending() */
    uint64_t csum;
    uint64_t cmd_count, err_count, irq_count;
    bool irq_pending, intx_masked;
    unsigned generation;        /* bumped by reset, to drop stale results */
    int intx_fd, msi_fd;
    int err_fd;                 /* error notifier: accepted, never signalled */
    uint8_t *buf;
} d = { .intx_fd = -1, .msi_fd = -1, .err_fd = -1 };

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static void config_init(void)
{
    uint8_t *c = d.config;

    memset(c, 0, sizeof(d.config));
    memset(d.wmask, 0, sizeof(d.wmask));
    put16(c + 0x00, VENDOR_ID);
    put16(c + 0x02, DEVICE_ID);
    put16(c + 0x06, STATUS_CAPS);
    c[0x08] = 1;                        /* revision */
    c[0x0a] = 0x80;                     /* class 0880: other system peripheral */
    c[0x0b] = 0x08;
    put32(c + 0x10, 0);                 /* BAR0: 32-bit, non-prefetchable memory */
    put16(c + 0x2c, VENDOR_ID);
    put16(c + 0x2e, DEVICE_ID);
    c[0x34] = MSI_CAP;
    c[0x3d] = 1;                        /* INTA# */
    c[MSI_CAP] = 0x05;                  /* MSI, last capability */
    put16(c + MSI_CAP + 2, 0x0080);     /* 64-bit address, one vector */

    put16(d.wmask + 0x04, CMD_MEMORY | CMD_MASTER | CMD_INTX_OFF);
    put32(d.wmask + 0x10, ~(uint32_t)(BAR0_SIZE - 1));
    d.wmask[0x3c] = 0xff;               /* interrupt line */
    d.wmask[MSI_CAP + 2] = 0x71;        /* enable + multiple message enable */
    put32(d.wmask + MSI_CAP + 4, 0xfffffffc);
    put32(d.wmask + MSI_CAP + 8, 0xffffffff);
    put16(d.wmask + MSI_CAP + 12, 0xffff);
}

void dev_init(void)
{
    d.buf = calloc(1, BUF_SIZE);
    if (!d.buf) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    dev_reset();
}

void dev_reset(void)
{
    config_init();
    d.src = d.dst = 0;
    d.len = d.cmd = d.status = d.error = d.irq_ctrl = d.pending = 0;
    d.bench_iters = 0;
    d.csum = 0;
    d.irq_pending = false;
    d.intx_masked = false;
    d.generation++;
    memset(d.buf, 0, BUF_SIZE);
}

uint64_t dev_region_size(unsigned index)
{
    return index == DEV_REGION_BAR0 ? BAR0_SIZE :
           index == DEV_REGION_CONFIG ? CONFIG_SIZE : 0;
}

int dev_irq_count(unsigned index)
{
    /* The error index exists only so that QEMU can register its notifier
     * (it warns otherwise); this device never reports errors that way. */
    return index == DEV_IRQ_INTX || index == DEV_IRQ_MSI || index == DEV_IRQ_ERR ? 1 : 0;
}

/* ---- interrupts ---- */

static void signal_fd(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        fprintf(log_file, "warning: cannot signal interrupt eventfd\n");
    }
}

/* INTx is level-triggered and auto-masked: deliver once, then wait for the
 * client's unmask, and only while the guest has not disabled INTx. */
static void intx_update(void)
{
    uint16_t cmd = get16(d.config + 0x04);

    if (d.intx_fd >= 0 && d.msi_fd < 0 && d.irq_pending && !d.intx_masked &&
        !(cmd & CMD_INTX_OFF)) {
        d.intx_masked = true;
        signal_fd(d.intx_fd);
    }
}

static void raise_irq(void)
{
    d.irq_pending = true;
    d.irq_count++;
    if (d.msi_fd >= 0) {
        signal_fd(d.msi_fd);
    } else {
        intx_update();
    }
}

static void set_fd(int *slot, int fd)
{
    if (*slot >= 0) {
        close(*slot);
    }
    *slot = fd;
}

void dev_close_irqs(void)
{
    set_fd(&d.intx_fd, -1);
    set_fd(&d.msi_fd, -1);
    set_fd(&d.err_fd, -1);
}

int dev_set_irqs(struct vu_msg *m)
{
    uint32_t argsz, flags, index, start, count;
    enum { DATA_NONE = 1, DATA_BOOL = 2, DATA_EVENTFD = 4 };
    enum { ACT_MASK = 8, ACT_UNMASK = 16, ACT_TRIGGER = 32 };

    if (m->len < 20) {
        return EINVAL;
    }
    memcpy(&argsz, m->data, 4);
    memcpy(&flags, m->data + 4, 4);
    memcpy(&index, m->data + 8, 4);
    memcpy(&start, m->data + 12, 4);
    memcpy(&count, m->data + 16, 4);

    uint32_t data = flags & 0x7, action = flags & 0x38;
    if (argsz < 20 || (flags & ~0x3fu) || index >= DEV_NUM_IRQS ||
        (data != DATA_NONE && data != DATA_BOOL && data != DATA_EVENTFD) ||
        (action != ACT_MASK && action != ACT_UNMASK && action != ACT_TRIGGER)) {
        return EINVAL;
    }
    int *slot = index == DEV_IRQ_INTX ? &d.intx_fd :
                index == DEV_IRQ_MSI ? &d.msi_fd :
                index == DEV_IRQ_ERR ? &d.err_fd : NULL;

    /* TRIGGER with no data and count 0 switches the whole index off. */
    if (action == ACT_TRIGGER && data == DATA_NONE && count == 0) {
        if (slot) {
            set_fd(slot, -1);
        }
        return 0;
    }
    if (start > (uint32_t)dev_irq_count(index) ||
        count > (uint32_t)dev_irq_count(index) - start || count == 0) {
        return EINVAL;
    }
    /* From here on the index has exactly one vector: start 0, count 1. */
    if (data == DATA_EVENTFD) {
        if (action != ACT_TRIGGER || (m->nfds != 0 && m->nfds != 1)) {
            return EINVAL;
        }
        set_fd(slot, m->nfds ? m->fds[0] : -1);
        if (m->nfds) {
            m->fds[0] = -1;     /* kept */
        }
        fprintf(log_file, "irq %s eventfd %s\n",
                index == DEV_IRQ_INTX ? "intx" : index == DEV_IRQ_MSI ? "msi" : "err",
                *slot >= 0 ? "set" : "cleared");
        if (index == DEV_IRQ_INTX) {
            d.intx_masked = false;
            intx_update();
        }
        return 0;
    }
    if (data == DATA_BOOL) {
        if (m->len < 20 + (size_t)count) {
            return EINVAL;
        }
        if (!m->data[20]) {
            return 0;
        }
    }
    switch (action) {
    case ACT_TRIGGER:
        if (*slot >= 0) {
            signal_fd(*slot);
        }
        return 0;
    case ACT_MASK:
    case ACT_UNMASK:
        if (index != DEV_IRQ_INTX) {
            return EINVAL;      /* only INTx is maskable */
        }
        d.intx_masked = action == ACT_MASK;
        intx_update();
        return 0;
    }
    return EINVAL;
}

/* ---- config space ---- */

static int config_rw(uint64_t off, uint8_t *buf, uint32_t count, bool write)
{
    if (off > CONFIG_SIZE || count > CONFIG_SIZE - off) {
        return EINVAL;
    }
    if (!write) {
        uint16_t status = STATUS_CAPS | ((d.irq_pending && d.msi_fd < 0) ? STATUS_INTX : 0);
        put16(d.config + 0x06, status);
        memcpy(buf, d.config + off, count);
        return 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *b = &d.config[off + i];
        *b = (uint8_t)((*b & ~d.wmask[off + i]) | (buf[i] & d.wmask[off + i]));
    }
    intx_update();          /* the guest may have re-enabled INTx */
    return 0;
}

/* ---- BAR0 ---- */

static uint32_t bar0_read32(uint64_t off)
{
    switch (off) {
    case REG_ID: return DEV_ID_VALUE;
    case REG_VERSION: return 1;
    case REG_SRC_LO: return (uint32_t)d.src;
    case REG_SRC_HI: return (uint32_t)(d.src >> 32);
    case REG_DST_LO: return (uint32_t)d.dst;
    case REG_DST_HI: return (uint32_t)(d.dst >> 32);
    case REG_LEN: return d.len;
    case REG_CMD: return d.cmd;
    case REG_STATUS: return d.status;
    case REG_ERROR: return d.error;
    case REG_IRQ_STATUS: return d.irq_pending;
    case REG_IRQ_CTRL: return d.irq_ctrl;
    case REG_BUF_SIZE: return BUF_SIZE;
    case REG_IRQ_COUNT: return (uint32_t)d.irq_count;
    case REG_CSUM_LO: return (uint32_t)d.csum;
    case REG_CSUM_HI: return (uint32_t)(d.csum >> 32);
    case REG_CMD_COUNT: return (uint32_t)d.cmd_count;
    case REG_BENCH_ITERS: return d.bench_iters;
    }
    if (off >= REG_COUNTERS && off < REG_COUNTERS + 48) {
        /* layout: per mode (mmap, file-io, message) bytes u64 then ops u64 */
        unsigned word = (unsigned)(off - REG_COUNTERS) / 4;
        unsigned mode = word / 4, which = (word / 2) % 2, half = word % 2;
        uint64_t v = which ? dma_stats.ops[mode] : dma_stats.bytes[mode];
        return half ? (uint32_t)(v >> 32) : (uint32_t)v;
    }
    return 0;
}

static void bar0_write32(uint64_t off, uint32_t v)
{
    switch (off) {
    case REG_SRC_LO: d.src = (d.src & ~0xffffffffull) | v; break;
    case REG_SRC_HI: d.src = (d.src & 0xffffffffull) | ((uint64_t)v << 32); break;
    case REG_DST_LO: d.dst = (d.dst & ~0xffffffffull) | v; break;
    case REG_DST_HI: d.dst = (d.dst & 0xffffffffull) | ((uint64_t)v << 32); break;
    case REG_LEN: d.len = v; break;
    case REG_STATUS: d.status &= ~(v & (ST_DONE | ST_ERROR)); break;
    case REG_IRQ_STATUS:
        if (v & 1) {
            d.irq_pending = false;
        }
        break;
    case REG_IRQ_CTRL: d.irq_ctrl = v & 1; break;
    case REG_BENCH_ITERS: d.bench_iters = v; break;
    case REG_CMD:
        if (d.status & ST_BUSY) {
            fprintf(log_file, "warning: command 0x%x while busy, ignored\n", v);
            break;
        }
        d.cmd = v;
        d.status = ST_BUSY;
        d.error = 0;
        d.pending = v;
        break;
    default:
        break;              /* read-only or unused: ignored, like hardware */
    }
}

static int bar0_rw(uint64_t off, uint8_t *buf, uint32_t count, bool write)
{
    if ((count != 1 && count != 2 && count != 4 && count != 8) ||
        off % count || off >= BAR0_SIZE || count > BAR0_SIZE - off) {
        return EINVAL;
    }
    if (write) {
        /* Registers take whole 32-bit writes; narrower ones are refused so
         * a half-written address can never start a transfer. */
        if (count < 4) {
            return EINVAL;
        }
        for (uint32_t i = 0; i < count; i += 4) {
            uint32_t v;
            memcpy(&v, buf + i, 4);
            bar0_write32(off + i, v);
        }
        return 0;
    }
    uint64_t base = off & ~3ull;
    uint8_t tmp[8];
    for (uint32_t i = 0; i < (count < 4 ? 4 : count); i += 4) {
        uint32_t v = bar0_read32(base + i);
        memcpy(tmp + i, &v, 4);
    }
    memcpy(buf, tmp + (off - base), count);
    return 0;
}

int dev_region_read(unsigned index, uint64_t off, void *buf, uint32_t count)
{
    if (index == DEV_REGION_CONFIG) {
        return config_rw(off, buf, count, false);
    }
    if (index == DEV_REGION_BAR0) {
        return bar0_rw(off, buf, count, false);
    }
    return EINVAL;
}

int dev_region_write(unsigned index, uint64_t off, const void *buf, uint32_t count)
{
    if (index == DEV_REGION_CONFIG) {
        return config_rw(off, (uint8_t *)buf, count, true);
    }
    if (index == DEV_REGION_BAR0) {
        return bar0_rw(off, (uint8_t *)buf, count, true);
    }
    return EINVAL;
}

/* ---- the engine ---- */

/* FNV-1a, so the guest can check what the device actually moved. */
/* Does [off, off + len) lie inside the internal buffer? */
static bool in_buf(uint64_t off, uint64_t len)
{
    return off <= BUF_SIZE && len <= BUF_SIZE - off;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    while (n--) {
        h = (h ^ *p++) * 0x100000001b3ull;
    }
    return h;
}

static int run_command(struct conn *c, uint32_t op)
{
    uint64_t len = d.len;
    uint8_t *tmp;
    int err;

    if (len == 0) {
        return EINVAL;
    }
    if (!(get16(d.config + 0x04) & CMD_MASTER)) {
        return EPERM;           /* bus mastering is off: no DMA allowed */
    }
    switch (op) {
    case OP_TO_BUF:
        if (!in_buf(d.dst, len)) {
            return ERANGE;
        }
        err = dma_read(c, d.src, d.buf + d.dst, len);
        if (!err) {
            d.csum = fnv1a(d.buf + d.dst, len);
        }
        return err;
    case OP_FROM_BUF:
        if (!in_buf(d.src, len)) {
            return ERANGE;
        }
        d.csum = fnv1a(d.buf + d.src, len);
        return dma_write(c, d.dst, d.buf + d.src, len);
    case OP_COPY:
        if (len > BUF_SIZE) {
            return ERANGE;
        }
        tmp = malloc(len);
        if (!tmp) {
            return ENOMEM;
        }
        err = dma_read(c, d.src, tmp, len);
        if (!err) {
            d.csum = fnv1a(tmp, len);
            err = dma_write(c, d.dst, tmp, len);
        }
        free(tmp);
        return err;
    case OP_BENCH_READ:
        if (!in_buf(d.dst, len)) {
            return ERANGE;
        }
        err = bench_run(c, false, d.src, d.buf + d.dst, len, d.bench_iters);
        if (!err) {
            d.csum = fnv1a(d.buf + d.dst, len);
        }
        return err;
    case OP_BENCH_WRITE:
        if (!in_buf(d.src, len)) {
            return ERANGE;
        }
        d.csum = fnv1a(d.buf + d.src, len);
        return bench_run(c, true, d.dst, d.buf + d.src, len, d.bench_iters);
    }
    return EINVAL;
}

void dev_run_pending(struct conn *c)
{
    uint32_t op = d.pending;
    unsigned gen = d.generation;
    int err;

    if (!op) {
        return;
    }
    d.pending = 0;
    err = run_command(c, op);
    if (gen != d.generation) {
        return;                 /* reset while we were waiting for the client */
    }
    d.cmd_count++;
    d.status = ST_DONE | (err ? ST_ERROR : 0);
    d.error = (uint32_t)err;
    if (err) {
        d.err_count++;
        fprintf(log_file, "command %u failed: %s\n", op, strerror(err));
    }
    if (d.irq_ctrl & 1) {
        raise_irq();
    }
}

/* ---- statistics ---- */

void dev_print_stats(FILE *f)
{
    fprintf(f, "stats");
    for (int m = 0; m < MODE_COUNT; m++) {
        fprintf(f, " %s_bytes=%llu %s_ops=%llu", dma_mode_name(m),
                (unsigned long long)dma_stats.bytes[m], dma_mode_name(m),
                (unsigned long long)dma_stats.ops[m]);
    }
    fprintf(f, " commands=%llu errors=%llu irqs=%llu\n",
            (unsigned long long)d.cmd_count, (unsigned long long)d.err_count,
            (unsigned long long)d.irq_count);
}

int dev_write_stats_json(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        fprintf(log_file, "error: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "{");
    for (int m = 0; m < MODE_COUNT; m++) {
        fprintf(f, "\"%s\": {\"bytes\": %llu, \"ops\": %llu}, ", dma_mode_name(m),
                (unsigned long long)dma_stats.bytes[m],
                (unsigned long long)dma_stats.ops[m]);
    }
    fprintf(f, "\"commands\": %llu, \"errors\": %llu, \"irqs\": %llu}\n",
            (unsigned long long)d.cmd_count, (unsigned long long)d.err_count,
            (unsigned long long)d.irq_count);
    return fclose(f) ? -1 : 0;
}
