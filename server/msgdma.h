/*
 * Message DMA: one DMA_READ or DMA_WRITE exchange with the client, in the
 * specification's layout or (c->baseline_dma_layout) in QEMU 10.2.2's.
 */
#ifndef SERVER_MSGDMA_H
#define SERVER_MSGDMA_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

/* Largest len msg_dma() takes: both sides' transfer limits. */
uint64_t msg_dma_max(const struct conn *c);
/* Move len bytes (at most msg_dma_max) between buf and the client's memory
 * at iova.  0 or a positive errno; a reply that does not match the request
 * is EPROTO and marks the client as broken. */
int msg_dma(struct conn *c, uint64_t iova, uint8_t *buf, uint64_t len,
            bool to_guest);

#endif
