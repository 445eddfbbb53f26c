/*
 * Timing helpers shared by the server's benchmark command (server/bench.c)
 * and the memcpy reference (bench/memcpy-bench.c), so that both measure and
 * summarise their samples the same way.
 */
#ifndef BENCH_TIMING_H
#define BENCH_TIMING_H

#include <stdint.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* qsort() comparison for latency samples. */
static inline int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static inline uint64_t percentile(const uint64_t *v, uint64_t n, unsigned pct)
{
    uint64_t rank = (n * pct + 99) / 100;

    return v[rank ? rank - 1 : 0];
}

/*
 * Make repetition i carry different bytes, so a transfer that silently did
 * nothing cannot pass as the one before it.
 */
static inline void stamp(uint8_t *buf, uint64_t len, uint64_t i)
{
    uint64_t w = 0;
    size_t n = len < 8 ? (size_t)len : 8;

    memcpy(&w, buf, n);
    w ^= i;
    memcpy(buf, &w, n);
}

#endif
