/*
 * Message DMA (msgdma.h): the server asks the client to read or write its
 * memory with DMA_READ/DMA_WRITE, and checks that the reply matches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "msgdma.h"
#include "protocol.h"

/*
 * Payload layout of DMA_READ/DMA_WRITE.  The specification's: address u64,
 * count u64, data at 16; the DMA_WRITE reply echoes address and count.
 * QEMU 10.2.2's client (--baseline-dma-layout, for benchmarking it only): address
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
static const struct dma_layout baseline_layout = { 12, 16, 4, 0 };

uint64_t msg_dma_max(const struct conn *c)
{
    /* The client receives our DMA_WRITE data and we receive its DMA_READ
     * data: respect both sides' transfer limits. */
    return c->peer_max_xfer < VU_OUR_MAX_XFER ? c->peer_max_xfer : VU_OUR_MAX_XFER;
}

int msg_dma(struct conn *c, uint64_t iova, uint8_t *buf, uint64_t len,
            bool to_guest)
{
    const struct dma_layout *lay = c->baseline_dma_layout ? &baseline_layout : &spec_layout;
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
    err = conn_call(c, to_guest ? VFIO_USER_DMA_WRITE : VFIO_USER_DMA_READ,
                    req, req_len, &reply);
    free(req);
    if (err) {
        return err;
    }
    /* Replies start with the request's address and count (except the baseline
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
        c->broken = true;       /* the client answered wrongly */
    }
    return err;
}
