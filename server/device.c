/*
 * The emulated device (device.h): a PCI DMA engine with a 4 MiB internal
 * buffer.  Register map in include/dma-engine.h, behaviour in
 * docs/server.md.
 */
#include <errno.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dma-engine.h"

#include "bench.h"
#include "device.h"
#include "log.h"
#include "regions.h"

#define CONFIG_SIZE     256
#define MSI_CAP         0x40    /* where the MSI capability lives */

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
    put16(c + PCI_VENDOR_ID, DMAENG_VENDOR_ID);
    put16(c + PCI_DEVICE_ID, DMAENG_DEVICE_ID);
    put16(c + PCI_STATUS, PCI_STATUS_CAP_LIST);
    c[PCI_REVISION_ID] = 1;
    put16(c + PCI_CLASS_DEVICE, 0x0880);        /* other system peripheral */
    put32(c + PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_SPACE_MEMORY |
          PCI_BASE_ADDRESS_MEM_TYPE_32);
    put16(c + PCI_SUBSYSTEM_VENDOR_ID, DMAENG_VENDOR_ID);
    put16(c + PCI_SUBSYSTEM_ID, DMAENG_DEVICE_ID);
    c[PCI_CAPABILITY_LIST] = MSI_CAP;
    c[PCI_INTERRUPT_PIN] = 1;                   /* INTA# */
    c[MSI_CAP + PCI_CAP_LIST_ID] = PCI_CAP_ID_MSI;  /* last capability */
    put16(c + MSI_CAP + PCI_MSI_FLAGS, PCI_MSI_FLAGS_64BIT);    /* one vector */

    put16(d.wmask + PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
          PCI_COMMAND_INTX_DISABLE);
    put32(d.wmask + PCI_BASE_ADDRESS_0, ~(uint32_t)(DMAENG_BAR0_SIZE - 1));
    d.wmask[PCI_INTERRUPT_LINE] = 0xff;
    d.wmask[MSI_CAP + PCI_MSI_FLAGS] = PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE;
    put32(d.wmask + MSI_CAP + PCI_MSI_ADDRESS_LO, 0xfffffffc);
    put32(d.wmask + MSI_CAP + PCI_MSI_ADDRESS_HI, 0xffffffff);
    put16(d.wmask + MSI_CAP + PCI_MSI_DATA_64, 0xffff);
}

void dev_init(void)
{
    d.buf = calloc(1, DMAENG_BUF_SIZE);
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
    memset(d.buf, 0, DMAENG_BUF_SIZE);
}

uint64_t dev_region_size(unsigned index)
{
    return index == VFIO_PCI_BAR0_REGION_INDEX ? DMAENG_BAR0_SIZE :
           index == VFIO_PCI_CONFIG_REGION_INDEX ? CONFIG_SIZE : 0;
}

unsigned dev_irq_count(unsigned index)
{
    /* The error index exists only so that QEMU can register its notifier
     * (it warns otherwise); this device never reports errors that way. */
    return index == VFIO_PCI_INTX_IRQ_INDEX || index == VFIO_PCI_MSI_IRQ_INDEX ||
           index == VFIO_PCI_ERR_IRQ_INDEX ? 1 : 0;
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
    uint16_t cmd = get16(d.config + PCI_COMMAND);

    if (d.intx_fd >= 0 && d.msi_fd < 0 && d.irq_pending && !d.intx_masked &&
        !(cmd & PCI_COMMAND_INTX_DISABLE)) {
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

static int *irq_slot(unsigned index)
{
    return index == VFIO_PCI_INTX_IRQ_INDEX ? &d.intx_fd :
           index == VFIO_PCI_MSI_IRQ_INDEX ? &d.msi_fd :
           index == VFIO_PCI_ERR_IRQ_INDEX ? &d.err_fd : NULL;
}

void dev_irq_set_eventfd(unsigned index, int fd)
{
    int *slot = irq_slot(index);

    if (!slot) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    set_fd(slot, fd);
    if (dev_irq_count(index)) {
        fprintf(log_file, "irq %s eventfd %s\n",
                index == VFIO_PCI_INTX_IRQ_INDEX ? "intx" :
                index == VFIO_PCI_MSI_IRQ_INDEX ? "msi" : "err",
                fd >= 0 ? "set" : "cleared");
    }
    if (index == VFIO_PCI_INTX_IRQ_INDEX) {
        d.intx_masked = false;
        intx_update();
    }
}

void dev_irq_trigger(unsigned index)
{
    int *slot = irq_slot(index);

    if (slot && *slot >= 0) {
        signal_fd(*slot);
    }
}

int dev_irq_mask(unsigned index, bool mask)
{
    if (index != VFIO_PCI_INTX_IRQ_INDEX) {
        return EINVAL;      /* only INTx is maskable */
    }
    d.intx_masked = mask;
    intx_update();
    return 0;
}

/* ---- config space ---- */

static int config_rw(uint64_t off, uint8_t *buf, uint32_t count, bool write)
{
    if (off > CONFIG_SIZE || count > CONFIG_SIZE - off) {
        return EINVAL;
    }
    if (!write) {
        uint16_t status = PCI_STATUS_CAP_LIST |
                          ((d.irq_pending && d.msi_fd < 0) ? PCI_STATUS_INTERRUPT : 0);
        put16(d.config + PCI_STATUS, status);
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
    case DMAENG_REG_ID: return DMAENG_ID_VALUE;
    case DMAENG_REG_VERSION: return DMAENG_VERSION_VALUE;
    case DMAENG_REG_SRC: return (uint32_t)d.src;
    case DMAENG_REG_SRC + 4: return (uint32_t)(d.src >> 32);
    case DMAENG_REG_DST: return (uint32_t)d.dst;
    case DMAENG_REG_DST + 4: return (uint32_t)(d.dst >> 32);
    case DMAENG_REG_LEN: return d.len;
    case DMAENG_REG_CMD: return d.cmd;
    case DMAENG_REG_STATUS: return d.status;
    case DMAENG_REG_ERROR: return d.error;
    case DMAENG_REG_IRQ_STATUS: return d.irq_pending;
    case DMAENG_REG_IRQ_CTRL: return d.irq_ctrl;
    case DMAENG_REG_BUF_SIZE: return DMAENG_BUF_SIZE;
    case DMAENG_REG_IRQ_COUNT: return (uint32_t)d.irq_count;
    case DMAENG_REG_CSUM: return (uint32_t)d.csum;
    case DMAENG_REG_CSUM + 4: return (uint32_t)(d.csum >> 32);
    case DMAENG_REG_CMD_COUNT: return (uint32_t)d.cmd_count;
    case DMAENG_REG_BENCH_ITERS: return d.bench_iters;
    }
    if (off >= DMAENG_REG_COUNTERS &&
        off < DMAENG_REG_COUNTERS + DMAENG_NUM_MODES * DMAENG_COUNTER_STRIDE) {
        /* per mode: bytes u64, then operations u64 */
        unsigned rel = (unsigned)(off - DMAENG_REG_COUNTERS);
        unsigned mode = rel / DMAENG_COUNTER_STRIDE;
        bool ops = rel % DMAENG_COUNTER_STRIDE >= 8, high = rel % 8 >= 4;
        uint64_t v = ops ? dma_stats()->ops[mode] : dma_stats()->bytes[mode];
        return high ? (uint32_t)(v >> 32) : (uint32_t)v;
    }
    return 0;
}

static void bar0_write32(uint64_t off, uint32_t v)
{
    switch (off) {
    case DMAENG_REG_SRC: d.src = (d.src & ~0xffffffffull) | v; break;
    case DMAENG_REG_SRC + 4: d.src = (d.src & 0xffffffffull) | ((uint64_t)v << 32); break;
    case DMAENG_REG_DST: d.dst = (d.dst & ~0xffffffffull) | v; break;
    case DMAENG_REG_DST + 4: d.dst = (d.dst & 0xffffffffull) | ((uint64_t)v << 32); break;
    case DMAENG_REG_LEN: d.len = v; break;
    case DMAENG_REG_STATUS: d.status &= ~(v & (DMAENG_STATUS_DONE | DMAENG_STATUS_ERROR)); break;
    case DMAENG_REG_IRQ_STATUS:
        if (v & DMAENG_IRQ_COMPLETION) {
            d.irq_pending = false;
        }
        break;
    case DMAENG_REG_IRQ_CTRL: d.irq_ctrl = v & DMAENG_IRQ_COMPLETION; break;
    case DMAENG_REG_BENCH_ITERS: d.bench_iters = v; break;
    case DMAENG_REG_CMD:
        if (d.status & DMAENG_STATUS_BUSY) {
            fprintf(log_file, "warning: command 0x%x while busy, ignored\n", v);
            break;
        }
        d.cmd = v;
        d.status = DMAENG_STATUS_BUSY;
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
        off % count || off >= DMAENG_BAR0_SIZE || count > DMAENG_BAR0_SIZE - off) {
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

int dev_region_rw(unsigned index, uint64_t off, uint8_t *buf, uint32_t count,
                  bool write)
{
    return index == VFIO_PCI_CONFIG_REGION_INDEX ? config_rw(off, buf, count, write) :
           index == VFIO_PCI_BAR0_REGION_INDEX ? bar0_rw(off, buf, count, write) : EINVAL;
}

/* ---- the engine ---- */

/* Does [off, off + len) lie inside the internal buffer? */
static bool in_buf(uint64_t off, uint64_t len)
{
    return off <= DMAENG_BUF_SIZE && len <= DMAENG_BUF_SIZE - off;
}

static int run_command(struct conn *c, uint32_t op)
{
    uint64_t len = d.len;
    uint8_t *tmp;
    int err;

    if (len == 0) {
        return EINVAL;
    }
    if (!(get16(d.config + PCI_COMMAND) & PCI_COMMAND_MASTER)) {
        return EPERM;           /* bus mastering is off: no DMA allowed */
    }
    switch (op) {
    case DMAENG_CMD_TO_BUF:
        if (!in_buf(d.dst, len)) {
            return ERANGE;
        }
        err = dma_read(c, d.src, d.buf + d.dst, len);
        if (!err) {
            d.csum = dmaeng_fnv1a(d.buf + d.dst, len);
        }
        return err;
    case DMAENG_CMD_FROM_BUF:
        if (!in_buf(d.src, len)) {
            return ERANGE;
        }
        d.csum = dmaeng_fnv1a(d.buf + d.src, len);
        return dma_write(c, d.dst, d.buf + d.src, len);
    case DMAENG_CMD_COPY:
        if (len > DMAENG_BUF_SIZE) {
            return ERANGE;
        }
        tmp = malloc(len);
        if (!tmp) {
            return ENOMEM;
        }
        err = dma_read(c, d.src, tmp, len);
        if (!err) {
            d.csum = dmaeng_fnv1a(tmp, len);
            err = dma_write(c, d.dst, tmp, len);
        }
        free(tmp);
        return err;
    case DMAENG_CMD_BENCH_READ:
        if (!in_buf(d.dst, len)) {
            return ERANGE;
        }
        err = bench_run(c, false, d.src, d.buf + d.dst, len, d.bench_iters);
        if (!err) {
            d.csum = dmaeng_fnv1a(d.buf + d.dst, len);
        }
        return err;
    case DMAENG_CMD_BENCH_WRITE:
        if (!in_buf(d.src, len)) {
            return ERANGE;
        }
        d.csum = dmaeng_fnv1a(d.buf + d.src, len);
        return bench_run(c, true, d.dst, d.buf + d.src, len, d.bench_iters);
    }
    return EINVAL;
}

bool dev_has_pending(void)
{
    return d.pending != 0;
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
    d.status = DMAENG_STATUS_DONE | (err ? DMAENG_STATUS_ERROR : 0);
    d.error = (uint32_t)err;
    if (err) {
        d.err_count++;
        fprintf(log_file, "command %u failed: %s\n", op, strerror(err));
    }
    if (d.irq_ctrl & DMAENG_IRQ_COMPLETION) {
        raise_irq();
    }
}

struct dev_counters dev_counters(void)
{
    return (struct dev_counters){
        .commands = d.cmd_count, .errors = d.err_count, .irqs = d.irq_count,
    };
}
