/*
 * dmatest: runs inside the test guest against the vfio-user DMA engine
 * (docs/server.md) and verifies every byte it moves.
 *
 * DMA memory: the guest kernel is booted with memmap=SIZE$PHYS, which keeps
 * that physical range out of the kernel's hands; we map it through /dev/mem
 * and hand its physical addresses to the device (no IOMMU in the guest, so
 * guest-physical addresses are the device's DMA addresses).
 *
 * Completion: with irq=intx the device is bound to uio_pci_generic and we
 * block on /dev/uioN for the INTx interrupt; with irq=poll we poll STATUS.
 *
 * Arguments (key=value): phys=ADDR size=BYTES irq=intx|poll
 * sizes=N:N:... seconds=S (repeat the sizes until S seconds have passed, to
 * keep the device busy while something else runs; default: once).
 * spin=MS (with irq=poll): poll STATUS without pausing, reading the device's
 * registers back to back while its DMA runs, time every one of those reads,
 * print "DMATEST REGREADS n=N max_us=U" and fail if one took MS or more.
 * Output ends with one line:
 *   DMATEST RESULT pass=N fail=M bytes=B mbps=X irqs=K
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dma-engine.h"

#define WAIT_MS 20000
#define GUARD 64        /* bytes checked on each side of a written range */

static volatile uint32_t *bar;
static char devdir[300];
static int uio_fd = -1;
static unsigned long irqs_seen;
/* spin=: the limit (ms; 0: off), the reads timed, the slowest (s) */
static double spin_ms;
static unsigned long spin_reads;
static double spin_max;

static void die(const char *what)
{
    printf("DMATEST ERROR %s: %s\n", what, errno ? strerror(errno) : "failed");
    printf("DMATEST RESULT pass=0 fail=1 bytes=0 mbps=0 irqs=0\n");
    exit(1);
}

static uint32_t rd(unsigned off) { return bar[off / 4]; }
static void wr(unsigned off, uint32_t v) { bar[off / 4] = v; }
/* bytes moved through access mode m; its operation count follows at +8 */
static unsigned counter(unsigned m) { return DMAENG_REG_COUNTERS + DMAENG_COUNTER_STRIDE * m; }
static uint64_t rd64(unsigned off) { return rd(off) | ((uint64_t)rd(off + 4) << 32); }

static unsigned long read_hex_file(const char *dir, const char *name)
{
    char path[400], buf[32] = "";
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    if (!fgets(buf, sizeof(buf), f)) {
        buf[0] = 0;
    }
    fclose(f);
    return strtoul(buf, NULL, 16);
}

static void find_device(void)
{
    DIR *dir = opendir("/sys/bus/pci/devices");
    struct dirent *e;

    if (!dir) {
        die("opendir /sys/bus/pci/devices");
    }
    while ((e = readdir(dir))) {
        char p[300];
        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", e->d_name);
        if (read_hex_file(p, "vendor") == DMAENG_VENDOR_ID && read_hex_file(p, "device") == DMAENG_DEVICE_ID) {
            strcpy(devdir, p);
            closedir(dir);
            printf("DMATEST device %s\n", e->d_name);
            return;
        }
    }
    closedir(dir);
    errno = ENODEV;
    die("no DMA engine device found");
}

/* Read-modify-write the PCI command register through sysfs. */
static void config_command(uint16_t set, uint16_t clear)
{
    char p[400];
    uint16_t cmd;
    int fd;

    snprintf(p, sizeof(p), "%s/config", devdir);
    fd = open(p, O_RDWR);
    if (fd < 0 || pread(fd, &cmd, 2, 4) != 2) {
        die("read PCI command register");
    }
    cmd = (uint16_t)((cmd | set) & ~clear);
    if (pwrite(fd, &cmd, 2, 4) != 2) {
        die("write PCI command register");
    }
    close(fd);
}

static void bind_uio(void)
{
    char p[400], id[32];
    int fd;
    DIR *dir;
    struct dirent *e;

    fd = open("/sys/bus/pci/drivers/uio_pci_generic/new_id", O_WRONLY);
    snprintf(id, sizeof(id), "%x %x", DMAENG_VENDOR_ID, DMAENG_DEVICE_ID);
    if (fd < 0 || write(fd, id, strlen(id)) < 0) {
        die("bind uio_pci_generic");
    }
    close(fd);
    snprintf(p, sizeof(p), "%s/uio", devdir);
    dir = opendir(p);
    if (!dir) {
        die("device has no uio node (uio_pci_generic refused it)");
    }
    while ((e = readdir(dir))) {
        if (strncmp(e->d_name, "uio", 3) == 0) {
            snprintf(p, sizeof(p), "/dev/%s", e->d_name);
            uio_fd = open(p, O_RDWR);
            break;
        }
    }
    closedir(dir);
    if (uio_fd < 0) {
        die("open /dev/uioN");
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A register read while the DMA runs, timed (spin=). */
static uint32_t timed_rd(unsigned off)
{
    double t = now();
    uint32_t v = rd(off);
    double dt = now() - t;

    spin_reads++;
    if (dt > spin_max) {
        spin_max = dt;
    }
    return v;
}

/* Wait for the command to finish; 0 on success. */
static int wait_done(void)
{
    double deadline = now() + WAIT_MS / 1000.0;

    if (uio_fd >= 0) {
        struct pollfd p = { .fd = uio_fd, .events = POLLIN };
        uint32_t count;
        int r;
        /* Wake up now and then to notice a device that went away. */
        while ((r = poll(&p, 1, 500)) == 0 && now() < deadline &&
               rd(DMAENG_REG_ID) == DMAENG_ID_VALUE) {
        }
        if (r != 1 || read(uio_fd, &count, 4) != 4) {
            printf("DMATEST ERROR no completion interrupt (status 0x%x)\n", rd(DMAENG_REG_STATUS));
            return rd(DMAENG_REG_ID) != DMAENG_ID_VALUE ? -2 : -1;
        }
        irqs_seen++;
        /* Acknowledge in the device, then let INTx through again (the uio
         * driver disabled it in the command register). */
        wr(DMAENG_REG_IRQ_STATUS, DMAENG_IRQ_COMPLETION);
        config_command(0, PCI_COMMAND_INTX_DISABLE);
    }
    while (rd(DMAENG_REG_STATUS) & DMAENG_STATUS_BUSY) {
        if (rd(DMAENG_REG_ID) != DMAENG_ID_VALUE) {
            /* reads of a dead vfio-user device return all ones */
            printf("DMATEST ERROR device stopped responding\n");
            return -2;
        }
        if (now() > deadline) {
            printf("DMATEST ERROR command timed out\n");
            return -1;
        }
        if (spin_ms > 0) {
            /* back to back: what the command count, buffer size and
             * status registers say must stay sane meanwhile */
            if (timed_rd(DMAENG_REG_BUF_SIZE) != DMAENG_BUF_SIZE ||
                timed_rd(DMAENG_REG_ID) != DMAENG_ID_VALUE) {
                printf("DMATEST ERROR register read wrong while busy\n");
                return -1;
            }
            timed_rd(DMAENG_REG_CMD_COUNT);
            timed_rd(DMAENG_REG_STATUS);
        } else {
            usleep(1000);
        }
    }
    uint32_t st = rd(DMAENG_REG_STATUS);
    if (st != DMAENG_STATUS_DONE) {
        printf("DMATEST ERROR status 0x%x error %u\n", st, rd(DMAENG_REG_ERROR));
        return -1;
    }
    wr(DMAENG_REG_STATUS, DMAENG_STATUS_DONE);
    return 0;
}

static int run_op(uint32_t op, uint64_t src, uint64_t dst, uint32_t len)
{
    wr(DMAENG_REG_SRC, (uint32_t)src);
    wr(DMAENG_REG_SRC + 4, (uint32_t)(src >> 32));
    wr(DMAENG_REG_DST, (uint32_t)dst);
    wr(DMAENG_REG_DST + 4, (uint32_t)(dst >> 32));
    wr(DMAENG_REG_LEN, len);
    wr(DMAENG_REG_CMD, op);
    return wait_done();
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

/* The destination range must equal the source and its surroundings must
 * still hold the 0xa5 fill, or the device wrote where it should not. */
static int check_copy(const char *name, const uint8_t *want, const uint8_t *got, size_t len)
{
    for (size_t i = 1; i <= GUARD; i++) {
        if (got[-(ptrdiff_t)i] != 0xa5 || got[len + i - 1] != 0xa5) {
            printf("DMATEST FAIL %s len=%zu: write outside the target range\n", name, len);
            return -1;
        }
    }
    if (memcmp(want, got, len) != 0) {
        size_t i = 0;
        while (want[i] == got[i]) {
            i++;
        }
        printf("DMATEST FAIL %s len=%zu: first difference at byte %zu\n", name, len, i);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t phys = 0x8000000, size = 16 << 20;
    const char *irq = "intx";
    char sizes_arg[256] = "4096:65537:1052673:3145728";
    char sizes_round[256];
    double seconds = 0;
    unsigned pass = 0, fail = 0;
    uint64_t bytes = 0;
    double busy = 0;
    int fd;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "phys=", 5)) {
            phys = strtoull(argv[i] + 5, NULL, 0);
        } else if (!strncmp(argv[i], "size=", 5)) {
            size = strtoull(argv[i] + 5, NULL, 0);
        } else if (!strncmp(argv[i], "irq=", 4)) {
            irq = argv[i] + 4;
        } else if (!strncmp(argv[i], "sizes=", 6)) {
            snprintf(sizes_arg, sizeof(sizes_arg), "%s", argv[i] + 6);
        } else if (!strncmp(argv[i], "seconds=", 8)) {
            seconds = strtod(argv[i] + 8, NULL);
        } else if (!strncmp(argv[i], "spin=", 5)) {
            spin_ms = strtod(argv[i] + 5, NULL);
        } else {
            printf("DMATEST ERROR unknown argument %s\n", argv[i]);
            return 2;
        }
    }

    find_device();
    if (!strcmp(irq, "intx")) {
        bind_uio();
    } else if (strcmp(irq, "poll")) {
        errno = EINVAL;
        die("irq must be intx or poll");
    }
    config_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0);

    char res[400];
    snprintf(res, sizeof(res), "%s/resource0", devdir);
    fd = open(res, O_RDWR | O_SYNC);
    if (fd < 0) {
        die("open resource0");
    }
    bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED) {
        die("mmap resource0");
    }
    if (rd(DMAENG_REG_ID) != DMAENG_ID_VALUE) {
        errno = 0;
        die("unexpected device id register");
    }
    uint32_t bufsize = rd(DMAENG_REG_BUF_SIZE);
    wr(DMAENG_REG_IRQ_CTRL, uio_fd >= 0 ? DMAENG_IRQ_COMPLETION : 0);

    fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd < 0) {
        die("open /dev/mem");
    }
    uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)phys);
    if (mem == MAP_FAILED) {
        die("mmap /dev/mem (is memmap= on the kernel command line?)");
    }
    /* Three equal areas: source, buffer read-back target, copy target. */
    uint64_t area = (size / 3) & ~4095ull;

    double started = now();
    int device_lost = 0;
    unsigned rounds = 0;
    do {
        rounds++;
        snprintf(sizes_round, sizeof(sizes_round), "%s", sizes_arg);
        for (char *tok = strtok(sizes_round, ":"); tok; tok = strtok(NULL, ":")) {
            uint32_t len = (uint32_t)strtoul(tok, NULL, 0);
            /* Odd offsets make every transfer straddle page boundaries. */
            uint64_t soff = 0x123, doff = 0x7b1;
            if (len == 0 || len > bufsize || soff + len + GUARD > area ||
                doff + len + GUARD > area) {
                printf("DMATEST FAIL len=%u: larger than the device buffer or the DMA area\n", len);
                fail++;
                continue;
            }
            uint8_t *a = mem, *b = mem + area, *c = mem + 2 * area;
            fill(a + soff, len, len);
            memset(b, 0xa5, area);
            memset(c, 0xa5, area);

            double t0 = now();
            int r1 = run_op(DMAENG_CMD_TO_BUF, phys + soff, 0, len);
            double t1 = now();
            if (!r1 && rd64(DMAENG_REG_CSUM) != dmaeng_fnv1a(a + soff, len)) {
                printf("DMATEST FAIL to-buf len=%u: device checksum differs\n", len);
                r1 = -1;
            }
            printf("DMATEST op=to-buf len=%u %s\n", len, r1 ? "FAIL" : "ok");
            r1 ? fail++ : pass++;

            double t2 = now();
            int r2 = run_op(DMAENG_CMD_FROM_BUF, 0, phys + area + doff, len);
            double t3 = now();
            if (!r2) {
                r2 = check_copy("from-buf", a + soff, b + doff, len);
            }
            printf("DMATEST op=from-buf len=%u %s\n", len, r2 ? "FAIL" : "ok");
            r2 ? fail++ : pass++;

            double t4 = now();
            int r3 = run_op(DMAENG_CMD_COPY, phys + soff, phys + 2 * area + doff, len);
            double t5 = now();
            if (!r3) {
                r3 = check_copy("copy", a + soff, c + doff, len);
            }
            printf("DMATEST op=copy len=%u %s\n", len, r3 ? "FAIL" : "ok");
            r3 ? fail++ : pass++;

            if (r1 == -2 || r2 == -2 || r3 == -2) {
                fail++;
                device_lost = 1;
                break;      /* no point going on without a device */
            }
            /* A copy moves the data twice (read + write). */
            bytes += (r1 ? 0 : len) + (r2 ? 0 : len) + (r3 ? 0 : 2ull * len);
            busy += (t1 - t0) + (t3 - t2) + (t5 - t4);
        }
    } while (!device_lost && now() - started < seconds);
    if (seconds > 0) {
        printf("DMATEST ROUNDS %u in %.1f s\n", rounds, now() - started);
    }

    printf("DMATEST COUNTERS mmap_bytes=%llu mmap_ops=%llu file_io_bytes=%llu "
           "file_io_ops=%llu message_bytes=%llu message_ops=%llu device_irqs=%u\n",
           (unsigned long long)rd64(counter(0)), (unsigned long long)rd64(counter(0) + 8),
           (unsigned long long)rd64(counter(1)), (unsigned long long)rd64(counter(1) + 8),
           (unsigned long long)rd64(counter(2)), (unsigned long long)rd64(counter(2) + 8),
           rd(DMAENG_REG_IRQ_COUNT));
    if (spin_ms > 0) {
        printf("DMATEST REGREADS n=%lu max_us=%.0f\n", spin_reads, spin_max * 1e6);
        if (spin_max * 1e3 >= spin_ms) {
            printf("DMATEST FAIL a register read took %.1f ms while DMA ran\n",
                   spin_max * 1e3);
            fail++;
        }
    }
    if (uio_fd >= 0 && irqs_seen != pass + fail) {
        /* every command should have interrupted exactly once */
        printf("DMATEST FAIL interrupts seen %lu for %u commands\n", irqs_seen, pass + fail);
        fail++;
    }
    printf("DMATEST RESULT pass=%u fail=%u bytes=%llu mbps=%.1f irqs=%lu\n", pass, fail,
           (unsigned long long)bytes, busy > 0 ? bytes / busy / 1e6 : 0.0, irqs_seen);
    return fail ? 1 : 0;
}
