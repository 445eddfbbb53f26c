/*
 * The DMA region table (regions.h) and the way each region is reached:
 * a mapping of the client's fd, pread/pwrite on it, or messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "memguard.h"
#include "msgdma.h"
#include "regions.h"

#define PAGE 4096u

struct dma_region {
    uint64_t iova, size;
    uint32_t prot;          /* DMA_PROT_READ | DMA_PROT_WRITE */
    enum dma_mode mode;
    int fd;                 /* file I/O only; -1 otherwise */
    uint64_t offset;        /* file position of iova (file I/O) */
    uint8_t *map;           /* mmap only: address of iova */
    void *map_base;         /* mmap only: what to munmap */
    size_t map_len;
};

static struct dma_region regions[MAX_REGIONS];
static int num_regions;
static struct dma_stats stats;

const char *dma_mode_name(enum dma_mode m)
{
    static const char *const names[] = { "mmap", "file-io", "message" };
    return m < MODE_COUNT ? names[m] : "?";
}

const struct dma_stats *dma_stats(void)
{
    return &stats;
}

static int map_region(struct dma_region *r, int fd, uint64_t offset)
{
    /* mmap needs a page-aligned file offset: map from the page start. */
    uint64_t delta = offset % PAGE;
    int prot = ((r->prot & DMA_PROT_READ) ? PROT_READ : 0) |
               ((r->prot & DMA_PROT_WRITE) ? PROT_WRITE : 0);
    struct stat st;

    if (r->size > SIZE_MAX - delta) {
        return EINVAL;
    }
    /* A region past the end of a regular file would fault on access. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        offset + r->size > (uint64_t)st.st_size) {
        fprintf(log_file, "dma-map refused iova=0x%llx: beyond end of file\n",
                (unsigned long long)r->iova);
        return EINVAL;
    }
    r->map_len = (size_t)(r->size + delta);
    r->map_base = mmap(NULL, r->map_len, prot ? prot : PROT_NONE, MAP_SHARED,
                       fd, (off_t)(offset - delta));
    if (r->map_base == MAP_FAILED) {
        int err = errno;
        r->map_base = NULL;
        fprintf(log_file, "dma-map refused iova=0x%llx: mmap: %s\n",
                (unsigned long long)r->iova, strerror(err));
        return err;
    }
    r->map = (uint8_t *)r->map_base + delta;
    return 0;
}

int region_add(uint64_t iova, uint64_t size, uint32_t prot,
               enum dma_mode mode, int fd, uint64_t offset)
{
    struct dma_region r = {
        .iova = iova, .size = size, .prot = prot, .mode = mode, .fd = -1,
    };

    if (size == 0 || iova + size < iova) {
        return EINVAL;
    }
    if (fd >= 0 && (offset > (uint64_t)INT64_MAX - size)) {
        return EINVAL;      /* file positions are signed 64-bit */
    }
    for (int i = 0; i < num_regions; i++) {
        if (iova < regions[i].iova + regions[i].size &&
            regions[i].iova < iova + size) {
            fprintf(log_file, "dma-map refused iova=0x%llx: overlaps iova=0x%llx\n",
                    (unsigned long long)iova, (unsigned long long)regions[i].iova);
            return EEXIST;
        }
    }
    if (num_regions == MAX_REGIONS) {
        return ENOSPC;
    }
    if (mode == MODE_MMAP) {
        int err = map_region(&r, fd, offset);
        if (err) {
            return err;
        }
    } else if (mode == MODE_FILE_IO) {
        r.fd = fd;
        r.offset = offset;
    }
    regions[num_regions++] = r;
    fprintf(log_file, "dma-region iova=0x%llx size=0x%llx mode=%s fd=%s prot=%s%s\n",
            (unsigned long long)iova, (unsigned long long)size,
            dma_mode_name(mode), fd >= 0 ? "yes" : "no",
            (prot & DMA_PROT_READ) ? "r" : "-", (prot & DMA_PROT_WRITE) ? "w" : "-");
    return 0;
}

static void remove_region(int i, bool quiet)
{
    struct dma_region *r = &regions[i];

    if (!quiet) {
        fprintf(log_file, "dma-unmap iova=0x%llx size=0x%llx\n",
                (unsigned long long)r->iova, (unsigned long long)r->size);
    }
    if (r->map_base) {
        munmap(r->map_base, r->map_len);
    }
    if (r->fd >= 0) {
        close(r->fd);
    }
    regions[i] = regions[--num_regions];
}

int region_remove_range(uint64_t iova, uint64_t size)
{
    if (iova + size < iova) {
        return EINVAL;
    }
    /* Regions are removed whole; a range that cuts one is an error. */
    for (int i = 0; i < num_regions; i++) {
        struct dma_region *r = &regions[i];
        bool touches = r->iova < iova + size && iova < r->iova + r->size;
        bool inside = r->iova >= iova && r->iova + r->size <= iova + size;
        if (touches && !inside) {
            return EINVAL;
        }
    }
    for (int i = 0; i < num_regions;) {
        struct dma_region *r = &regions[i];
        if (r->iova >= iova && r->iova + r->size <= iova + size) {
            remove_region(i, false);
        } else {
            i++;
        }
    }
    return 0;
}

void region_remove_all(bool quiet)
{
    while (num_regions > 0) {
        remove_region(num_regions - 1, quiet);
    }
}

static struct dma_region *find_region(uint64_t iova)
{
    for (int i = 0; i < num_regions; i++) {
        if (iova >= regions[i].iova && iova - regions[i].iova < regions[i].size) {
            return &regions[i];
        }
    }
    return NULL;
}

static int file_xfer(struct dma_region *r, uint64_t iova, uint8_t *buf,
                     uint64_t len, bool to_guest)
{
    off_t pos = (off_t)(r->offset + (iova - r->iova));

    while (len > 0) {
        ssize_t n = to_guest ? pwrite(r->fd, buf, len, pos) : pread(r->fd, buf, len, pos);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int err = n < 0 ? errno : EFAULT;   /* 0: past the end of the file */
            fprintf(log_file, "error: file-io %s at 0x%llx: %s\n",
                    to_guest ? "write" : "read", (unsigned long long)pos, strerror(err));
            return err;
        }
        stats.bytes[MODE_FILE_IO] += (uint64_t)n;
        stats.ops[MODE_FILE_IO]++;
        buf += n;
        pos += n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Walk the range region by region: guest memory may be discontiguous. */
static int dma_rw(struct conn *c, uint64_t iova, uint8_t *buf, uint64_t len,
                  bool to_guest)
{
    if (iova + len < iova) {
        return EFAULT;
    }
    while (len > 0) {
        struct dma_region *r = find_region(iova);
        uint64_t chunk;
        int err = 0;

        if (!r) {
            fprintf(log_file, "error: DMA to unmapped iova 0x%llx\n",
                    (unsigned long long)iova);
            return EFAULT;
        }
        if (!(r->prot & (to_guest ? DMA_PROT_WRITE : DMA_PROT_READ))) {
            fprintf(log_file, "error: DMA %s not permitted at iova 0x%llx\n",
                    to_guest ? "write" : "read", (unsigned long long)iova);
            return EPERM;
        }
        chunk = r->iova + r->size - iova;
        if (chunk > len) {
            chunk = len;
        }
        switch (r->mode) {
        case MODE_MMAP:
            err = to_guest ? guarded_copy(r->map + (iova - r->iova), buf, chunk)
                           : guarded_copy(buf, r->map + (iova - r->iova), chunk);
            if (err) {
                fprintf(log_file, "error: mmap access at iova 0x%llx faulted\n",
                        (unsigned long long)iova);
                return err;
            }
            stats.bytes[MODE_MMAP] += chunk;
            stats.ops[MODE_MMAP]++;
            break;
        case MODE_FILE_IO:
            err = file_xfer(r, iova, buf, chunk, to_guest);
            break;
        default:
            /* One message-sized piece at a time: the region may be unmapped
             * while we wait for the client, so it is looked up again for
             * the next piece. */
            if (chunk > msg_dma_max(c)) {
                chunk = msg_dma_max(c);
            }
            err = msg_dma(c, iova, buf, chunk, to_guest);
            if (!err) {
                stats.bytes[MODE_MESSAGE] += chunk;
                stats.ops[MODE_MESSAGE]++;
            }
            break;
        }
        if (err) {
            return err;
        }
        iova += chunk;
        buf += chunk;
        len -= chunk;
    }
    return 0;
}

int dma_read(struct conn *c, uint64_t iova, void *buf, uint64_t len)
{
    return dma_rw(c, iova, buf, len, false);
}

int dma_write(struct conn *c, uint64_t iova, const void *buf, uint64_t len)
{
    return dma_rw(c, iova, (uint8_t *)buf, len, true);
}
