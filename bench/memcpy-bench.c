/*
 * memcpy-bench: the machine's limit for the DMA benchmarks.  Copies between
 * two buffers of the given size with the same loop as the server's
 * benchmark command (server/bench.c), untimed checks included, so the two
 * see the same cache state; prints one JSON object per size and direction.
 *
 *   memcpy-bench ITERS SIZE...
 *
 * "read": a fixed source copied into a poisoned destination, compared with
 * a reference copy.  "write": the source with the repetition number folded
 * in, copied, then copied back out and compared.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-timing.h"

/*
 * Alignment as in the server: guest memory is page-aligned (an mmap of the
 * RAM fd), the device buffer is 16 bytes past a page boundary (a large
 * calloc), and at small sizes memcpy's speed depends on that.
 */
static uint8_t *alloc_at(size_t len, size_t skew, void **base)
{
    if (posix_memalign(base, 4096, len + 4096)) {
        return NULL;
    }
    return (uint8_t *)*base + skew;
}

static int run(unsigned long iters, size_t len, int write)
{
    void *b_guest = NULL, *b_dev = NULL, *b_chk = NULL;
    uint8_t *guest = alloc_at(len, 0, &b_guest);
    uint8_t *dev = alloc_at(len, 16, &b_dev);
    uint8_t *chk = alloc_at(len, 16, &b_chk);
    /* reads copy guest -> device buffer, writes the other way */
    uint8_t *src = write ? dev : guest, *dst = write ? guest : dev;
    uint64_t *lat = calloc(iters, sizeof(*lat)), total = 0;

    if (!guest || !dev || !chk || !lat) {
        fprintf(stderr, "memcpy-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < len; i++) {
        src[i] = (uint8_t)(i * 7 + 3);
    }
    memcpy(dst, src, len);          /* the server's warm-up transfer */
    memcpy(chk, src, len);
    for (unsigned long i = 0; i < iters; i++) {
        uint64_t t0, t1;
        int bad;

        if (write) {
            stamp(src, len, i + 1);
            t0 = now_ns();
            memcpy(dst, src, len);
            t1 = now_ns();
            memcpy(chk, dst, len);
            bad = memcmp(chk, src, len);
            stamp(src, len, i + 1);
        } else {
            memset(dst, 0x5a ^ (int)(i & 0xff), len);
            t0 = now_ns();
            memcpy(dst, src, len);
            t1 = now_ns();
            bad = memcmp(chk, dst, len);
        }
        if (bad) {
            fprintf(stderr, "memcpy-bench: copy mismatch\n");
            return 1;
        }
        lat[i] = t1 - t0;
        total += t1 - t0;
    }
    qsort(lat, iters, sizeof(*lat), cmp_u64);
    printf("{\"dir\": \"%s\", \"len\": %zu, \"iters\": %lu, \"total_ns\": %llu, "
           "\"p50_ns\": %llu, \"p99_ns\": %llu}\n", write ? "write" : "read",
           len, iters, (unsigned long long)total,
           (unsigned long long)percentile(lat, iters, 50),
           (unsigned long long)percentile(lat, iters, 99));
    free(b_guest);
    free(b_dev);
    free(b_chk);
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    char *end;
    unsigned long iters;

    if (argc < 3) {
        fprintf(stderr, "usage: memcpy-bench ITERS SIZE...\n");
        return 2;
    }
    errno = 0;
    iters = strtoul(argv[1], &end, 0);
    if (errno || *end || iters == 0 || iters > 10000000) {
        fprintf(stderr, "memcpy-bench: bad iteration count %s\n", argv[1]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        errno = 0;
        unsigned long long len = strtoull(argv[i], &end, 0);
        if (errno || *end || len == 0 || len > (1ull << 30)) {
            fprintf(stderr, "memcpy-bench: bad size %s\n", argv[i]);
            return 2;
        }
        if (run(iters, (size_t)len, 0) || run(iters, (size_t)len, 1)) {
            return 1;
        }
    }
    return 0;
}
