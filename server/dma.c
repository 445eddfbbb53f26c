/*
 * DMA regions and the three ways of reaching them: mmap of the client's fd,
 * file I/O (pread/pwrite) on the client's fd, and DMA_READ/DMA_WRITE
 * messages.  See docs/server.md for the rules applied to DMA_MAP.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"

#define MAX_REGIONS 1024    /* matches the max_dma_maps we advertise */
#define PAGE 4096u

struct dma_region {
    uint64_t iova, size;
    uint32_t prot;          /* DMA_FLAG_READ | DMA_FLAG_WRITE */
    enum dma_mode mode;
    int fd;                 /* file I/O only; -1 otherwise */
    uint64_t offset;        /* file position of iova (file I/O) */
    uint8_t *map;           /* mmap only: address of iova */
    void *map_base;         /* mmap only: what to munmap */
    size_t map_len;
};

static struct dma_region regions[MAX_REGIONS];
static int num_regions;
struct dma_stats dma_stats;

const char *dma_mode_name(enum dma_mode m)
{
    static const char *const names[] = { "mmap", "file-io", "message" };
    return m < MODE_COUNT ? names[m] : "?";
}

static void region_release(struct dma_region *r)
{
    if (r->map_base) {
        munmap(r->map_base, r->map_len);
    }
    if (r->fd >= 0) {
        close(r->fd);
    }
}

int dma_map(struct conn *c, struct vu_msg *m)
{
    uint32_t argsz, flags;
    uint64_t offset, iova, size;
    int fd = m->nfds == 1 ? m->fds[0] : -1;
    struct dma_region r = { .fd = -1 };

    if (m->len < 32 || m->nfds > 1) {
        return EINVAL;
    }
    memcpy(&argsz, m->data, 4);
    memcpy(&flags, m->data + 4, 4);
    memcpy(&offset, m->data + 8, 8);
    memcpy(&iova, m->data + 16, 8);
    memcpy(&size, m->data + 24, 8);
    if (argsz < 32) {
        return EINVAL;
    }

    /* Which flag bits this server understands. */
    uint32_t known = DMA_FLAG_READ | DMA_FLAG_WRITE;
    if (!c->legacy) {
        known |= DMA_FLAG_MODE_MMAP | DMA_FLAG_MODE_FILE;
    }
    if (flags & ~known) {
        fprintf(log_file, "dma-map refused iova=0x%llx: unknown flags 0x%x\n",
                (unsigned long long)iova, flags);
        return EINVAL;
    }
    if ((flags & DMA_FLAG_MODE_MMAP) && (flags & DMA_FLAG_MODE_FILE)) {
        fprintf(log_file, "dma-map refused iova=0x%llx: two access modes\n",
                (unsigned long long)iova);
        return EINVAL;
    }
    if ((flags & (DMA_FLAG_MODE_MMAP | DMA_FLAG_MODE_FILE)) && fd < 0) {
        fprintf(log_file, "dma-map refused iova=0x%llx: access mode needs an fd\n",
                (unsigned long long)iova);
        return EINVAL;
    }
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

    r.iova = iova;
    r.size = size;
    r.prot = flags & (DMA_FLAG_READ | DMA_FLAG_WRITE);
    if (flags & DMA_FLAG_MODE_FILE) {
        r.mode = MODE_FILE_IO;
    } else if (fd >= 0) {
        r.mode = MODE_MMAP;     /* explicit, or the pre-revision default */
    } else {
        r.mode = MODE_MESSAGE;
    }

    if (r.mode == MODE_MMAP) {
        /* mmap needs a page-aligned file offset: map from the page start. */
        uint64_t delta = offset % PAGE;
        int prot = ((r.prot & DMA_FLAG_READ) ? PROT_READ : 0) |
                   ((r.prot & DMA_FLAG_WRITE) ? PROT_WRITE : 0);

        struct stat st;

        if (size > SIZE_MAX - delta) {
            return EINVAL;
        }
        /* A region past the end of a regular file would fault on access. */
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            offset + size > (uint64_t)st.st_size) {
            fprintf(log_file, "dma-map refused iova=0x%llx: beyond end of file\n",
                    (unsigned long long)iova);
            return EINVAL;
        }
        r.map_len = (size_t)(size + delta);
        r.map_base = mmap(NULL, r.map_len, prot ? prot : PROT_NONE, MAP_SHARED,
                          fd, (off_t)(offset - delta));
        if (r.map_base == MAP_FAILED) {
            int err = errno;
            fprintf(log_file, "dma-map refused iova=0x%llx: mmap: %s\n",
                    (unsigned long long)iova, strerror(err));
            return err;
        }
        r.map = (uint8_t *)r.map_base + delta;
    } else if (r.mode == MODE_FILE_IO) {
        r.fd = fd;
        r.offset = offset;
        m->fds[0] = -1;         /* keep it */
    }
    regions[num_regions++] = r;
    fprintf(log_file, "dma-region iova=0x%llx size=0x%llx mode=%s fd=%s prot=%s%s\n",
            (unsigned long long)iova, (unsigned long long)size,
            dma_mode_name(r.mode), fd >= 0 ? "yes" : "no",
            (r.prot & DMA_FLAG_READ) ? "r" : "-", (r.prot & DMA_FLAG_WRITE) ? "w" : "-");
    return 0;
}

static void remove_region(int i, bool quiet)
{
    if (!quiet) {
        fprintf(log_file, "dma-unmap iova=0x%llx size=0x%llx\n",
                (unsigned long long)regions[i].iova, (unsigned long long)regions[i].size);
    }
    region_release(&regions[i]);
    regions[i] = regions[--num_regions];
}

int dma_unmap(struct conn *c, struct vu_msg *m)
{
    uint32_t argsz, flags;
    uint64_t iova, size;

    (void)c;
    if (m->len < 24) {
        return EINVAL;
    }
    memcpy(&argsz, m->data, 4);
    memcpy(&flags, m->data + 4, 4);
    memcpy(&iova, m->data + 8, 8);
    memcpy(&size, m->data + 16, 8);
    if (argsz < 24 || (flags & ~DMA_UNMAP_FLAG_ALL)) {
        return EINVAL;      /* dirty-page bitmaps are not supported */
    }
    if (flags & DMA_UNMAP_FLAG_ALL) {
        if (iova || size) {
            return EINVAL;
        }
        while (num_regions > 0) {
            remove_region(num_regions - 1, false);
        }
        return 0;
    }
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

/* At shutdown: release everything without logging it as a client unmap. */
void dma_unmap_all(void)
{
    while (num_regions > 0) {
        remove_region(num_regions - 1, true);
    }
}

/*
 * A client may shrink the file behind a mapping after DMA_MAP; touching the
 * vanished pages raises SIGBUS.  Turn that into an error instead of a crash.
 */
static sigjmp_buf copy_env;
static volatile sig_atomic_t copy_active;

static void on_sigbus(int sig)
{
    if (!copy_active) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    siglongjmp(copy_env, 1);
}

static int guarded_copy(void *dst, const void *src, size_t len)
{
    static bool installed;

    if (!installed) {
        /* SA_NODEFER: SIGBUS stays unblocked in the handler, so jumping out
         * of it leaves the signal mask as it was and sigsetjmp need not
         * save the mask (that would cost a system call on every copy). */
        struct sigaction sa = { .sa_handler = on_sigbus, .sa_flags = SA_NODEFER };
        sigaction(SIGBUS, &sa, NULL);
        installed = true;
    }
    if (sigsetjmp(copy_env, 0)) {
        copy_active = 0;
        return EFAULT;
    }
    copy_active = 1;
    memcpy(dst, src, len);
    copy_active = 0;
    return 0;
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

/*
 * Payload layout of DMA_READ/DMA_WRITE.  The specification's: address u64,
 * count u64, data at 16; the DMA_WRITE reply echoes address and count.
 * QEMU 10.2.2's client (--old-dma-layout, for benchmarking it only): address
 * u64, count u32, data at 12, and 4 bytes of padding at the end because it
 * sizes messages by its 32-byte struct; its DMA_WRITE reply is a bare header.
 */
struct dma_layout {
    size_t data_off;        /* where the data starts in the payload */
    size_t fixed;           /* payload bytes besides the data */
    size_t count_size;      /* 8 or 4 */
    size_t write_reply;     /* payload bytes of a DMA_WRITE reply */
};

static const struct dma_layout spec_layout = { 16, 16, 8, 16 };
static const struct dma_layout old_layout = { 12, 16, 4, 0 };

/* One DMA_READ/DMA_WRITE exchange of at most the client's transfer size. */
static int msg_xfer(struct conn *c, uint64_t iova, uint8_t *buf, uint64_t len,
                    bool to_guest)
{
    const struct dma_layout *lay = c->old_dma_layout ? &old_layout : &spec_layout;
    struct vu_msg reply;
    uint8_t *req;
    size_t req_len = lay->fixed + (to_guest ? len : 0);
    size_t want = to_guest ? lay->write_reply : lay->fixed + len;
    uint64_t got_addr, got_count = 0;
    int err;

    req = malloc(req_len);
    if (!req) {
        return ENOMEM;
    }
    memset(req, 0, lay->fixed);                 /* padding included */
    memcpy(req, &iova, 8);
    memcpy(req + 8, &len, lay->count_size);     /* little-endian: low bytes */
    if (to_guest) {
        memcpy(req + lay->data_off, buf, len);
        memset(req + lay->data_off + len, 0, lay->fixed - lay->data_off);
    }
    err = conn_call(c, to_guest ? VU_DMA_WRITE : VU_DMA_READ, req, req_len, &reply);
    free(req);
    if (err) {
        return err;
    }
    /* Replies start with the request's address and count (except the old
     * layout's empty DMA_WRITE reply); a read's carries the data. */
    err = 0;
    if (reply.len != want) {
        fprintf(log_file, "error: DMA %s reply has %zu payload bytes, expected %zu\n",
                to_guest ? "write" : "read", reply.len, want);
        err = EPROTO;
    } else if (want > 0) {
        memcpy(&got_addr, reply.data, 8);
        memcpy(&got_count, reply.data + 8, lay->count_size);
        if (got_addr != iova || got_count != len) {
            fprintf(log_file, "error: DMA reply names 0x%llx+%llu, asked 0x%llx+%llu\n",
                    (unsigned long long)got_addr, (unsigned long long)got_count,
                    (unsigned long long)iova, (unsigned long long)len);
            err = EPROTO;
        } else if (!to_guest) {
            memcpy(buf, reply.data + lay->data_off, len);
        }
    }
    msg_free(&reply);
    if (err) {
        c->broken = true;
    }
    return err;
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
        dma_stats.bytes[MODE_FILE_IO] += (uint64_t)n;
        dma_stats.ops[MODE_FILE_IO]++;
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
        if (!(r->prot & (to_guest ? DMA_FLAG_WRITE : DMA_FLAG_READ))) {
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
            dma_stats.bytes[MODE_MMAP] += chunk;
            dma_stats.ops[MODE_MMAP]++;
            break;
        case MODE_FILE_IO:
            err = file_xfer(r, iova, buf, chunk, to_guest);
            break;
        default:
            /* The region may be unmapped while we wait for the client, so
             * recheck it for every message-sized piece. */
            /* The client receives our DMA_WRITE data and we receive its
             * DMA_READ data: respect both sides' transfer limits. */
            if (chunk > c->peer_max_xfer) {
                chunk = c->peer_max_xfer;
            }
            if (chunk > VU_OUR_MAX_XFER) {
                chunk = VU_OUR_MAX_XFER;
            }
            err = msg_xfer(c, iova, buf, chunk, to_guest);
            if (!err) {
                dma_stats.bytes[MODE_MESSAGE] += chunk;
                dma_stats.ops[MODE_MESSAGE]++;
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
