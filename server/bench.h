/*
 * The benchmark commands' loop: one transfer repeated and timed inside the
 * server (docs/server.md, "Benchmark commands").
 */
#ifndef SERVER_BENCH_H
#define SERVER_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

/*
 * Move len bytes between guest memory at iova and buf, iters times
 * (1 .. DMAENG_MAX_BENCH_ITERS), timing each transfer; every repetition is
 * checked.  Logs a "bench ..." line.  0 or a positive errno.
 */
int bench_run(struct conn *c, bool to_guest, uint64_t iova, uint8_t *buf,
              uint64_t len, uint32_t iters);

#endif
