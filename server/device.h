/*
 * The emulated PCI device: a DMA engine with a 4 MiB buffer (register map
 * in include/dma-engine.h, behaviour in docs/server.md).  Regions and
 * interrupt indexes are numbered as for VFIO PCI devices.
 */
#ifndef SERVER_DEVICE_H
#define SERVER_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

void dev_init(void);
void dev_reset(void);

/* Regions (VFIO_PCI_*_REGION_INDEX): size 0 for the ones it does not have. */
uint64_t dev_region_size(unsigned index);
/* Read count bytes at off into buf, or write them from buf: 0 or an errno. */
int dev_region_rw(unsigned index, uint64_t off, uint8_t *buf, uint32_t count,
                  bool write);

/* Interrupts (VFIO_PCI_*_IRQ_INDEX): vectors of an index (0 or 1). */
unsigned dev_irq_count(unsigned index);
/* Give index an eventfd (the device keeps it) or take it away (fd -1). */
void dev_irq_set_eventfd(unsigned index, int fd);
/* Signal the index's eventfd, if it has one. */
void dev_irq_trigger(unsigned index);
/* Mask or unmask; EINVAL for anything but INTx. */
int dev_irq_mask(unsigned index, bool mask);
void dev_close_irqs(void);

/* A doorbell write queued a command; dev_run_pending runs it, as the
 * connection's task (transport.h): its DMA may wait for the client. */
bool dev_has_pending(void);
void dev_run_pending(struct conn *c);

struct dev_counters {
    uint64_t commands, errors, irqs;
};
struct dev_counters dev_counters(void);

#endif
