/*
 * memcpy that survives SIGBUS: a client may shrink the file behind a
 * mapping after DMA_MAP, and touching the vanished pages must be an error,
 * not a crash.
 */
#ifndef SERVER_MEMGUARD_H
#define SERVER_MEMGUARD_H

#include <stddef.h>

/* 0, or EFAULT if the copy touched a page that is gone. */
int guarded_copy(void *dst, const void *src, size_t len);

#endif
