/*
 * The benchmark command: one transfer repeated and timed inside the server,
 * so the numbers show the cost of the access mode and not that of whoever
 * rings the doorbell.  Only the transfer itself is timed; the checks around
 * it are not.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-timing.h"
#include "dma-engine.h"

#include "bench.h"
#include "log.h"
#include "regions.h"

/*
 * Reads (guest -> buf): a first, untimed read gives the reference; every
 * timed read goes into a poisoned buffer and must equal it.
 * Writes (buf -> guest): repetition i writes buf with i+1 folded into its
 * first bytes, then an untimed read-back must return exactly that.  buf is
 * left as it was; the guest keeps the last repetition's bytes.
 */
int bench_run(struct conn *c, bool to_guest, uint64_t iova, uint8_t *buf,
              uint64_t len, uint32_t iters)
{
    uint64_t *lat, total = 0;
    uint64_t before[MODE_COUNT];
    uint8_t *check;
    int err = 0;

    if (iters == 0 || iters > DMAENG_MAX_BENCH_ITERS || len == 0) {
        return EINVAL;
    }
    lat = calloc(iters, sizeof(*lat));
    check = malloc(len);
    if (!lat || !check) {
        free(lat);
        free(check);
        return ENOMEM;
    }
    memcpy(before, dma_stats()->bytes, sizeof(before));
    if (!to_guest) {
        err = dma_read(c, iova, check, len);
    }
    for (uint32_t i = 0; i < iters && !err; i++) {
        uint64_t t0, t1;

        if (to_guest) {
            stamp(buf, len, i + 1);
            t0 = now_ns();
            err = dma_write(c, iova, buf, len);
            t1 = now_ns();
            if (!err) {
                err = dma_read(c, iova, check, len);
            }
            if (!err && memcmp(check, buf, len)) {
                err = EIO;
            }
            stamp(buf, len, i + 1);
        } else {
            memset(buf, 0x5a ^ (int)(i & 0xff), len);
            t0 = now_ns();
            err = dma_read(c, iova, buf, len);
            t1 = now_ns();
            if (!err && memcmp(check, buf, len)) {
                err = EIO;
            }
        }
        if (err == EIO) {
            fprintf(log_file, "bench: repetition %u of %s 0x%llx+%llu moved wrong data\n",
                    i, to_guest ? "write to" : "read from",
                    (unsigned long long)iova, (unsigned long long)len);
        }
        lat[i] = t1 - t0;
        total += t1 - t0;
    }
    if (!err) {
        qsort(lat, iters, sizeof(*lat), cmp_u64);
        fprintf(log_file, "bench dir=%s len=%llu iters=%u total_ns=%llu "
                "min_ns=%llu p50_ns=%llu p99_ns=%llu max_ns=%llu",
                to_guest ? "write" : "read", (unsigned long long)len, iters,
                (unsigned long long)total, (unsigned long long)lat[0],
                (unsigned long long)percentile(lat, iters, 50),
                (unsigned long long)percentile(lat, iters, 99),
                (unsigned long long)lat[iters - 1]);
        /* Which modes did the work (checks included): lets the caller make
         * sure it measured the mode it meant to. */
        for (int m = 0; m < MODE_COUNT; m++) {
            fprintf(log_file, " %s_bytes=%llu", dma_mode_name(m),
                    (unsigned long long)(dma_stats()->bytes[m] - before[m]));
        }
        fprintf(log_file, "\n");
    } else {
        fprintf(log_file, "bench dir=%s len=%llu failed: %s\n",
                to_guest ? "write" : "read", (unsigned long long)len,
                strerror(err));
    }
    free(lat);
    free(check);
    return err;
}
