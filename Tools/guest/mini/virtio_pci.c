/* The modern virtio-pci transport (virtio 1.2 §4.1) as the mini guest's drivers use it:
 * find the common/notify/device capabilities, negotiate features with VERSION_1, set up
 * split virtqueues (§2.7) at fixed places in the DMA area, kick, reset. */
#include "mini.h"

static u32 cap_address(u32 slot, u32 cap) {
    u32 bar = pci_read(slot, cap + 4) & 0xff;
    return (u32)pci_bar(slot, bar) + pci_read(slot, cap + 8);
}

int virtio_find(u32 slot, struct virtio_dev *d) {
    memset(d, 0, sizeof *d);
    d->slot = slot;
    for (u32 cap = pci_read(slot, 0x34) & 0xfc, n = 0; cap && n < 32; cap = (pci_read(slot, cap) >> 8) & 0xfc, n++) {
        u32 head = pci_read(slot, cap);
        if ((head & 0xff) == 0x11) d->msix = cap;
        if ((head & 0xff) != 0x09) continue;
        switch ((head >> 24) & 0xff) { /* cfg_type */
        case 1: d->common = cap_address(slot, cap); break;
        case 2: d->notify_base = cap_address(slot, cap); d->notify_mult = pci_read(slot, cap + 16); break;
        case 4: d->device_cfg = cap_address(slot, cap); break;
        }
    }
    return d->common && d->notify_base && d->device_cfg && d->msix;
}

/* Reset, ACKNOWLEDGE | DRIVER, accept `features_low` (of those offered) and VERSION_1,
 * FEATURES_OK and its check (§3.1.1). */
int virtio_negotiate(struct virtio_dev *d, u32 features_low) {
    u32 c = d->common;
    mmio_write8(c + 0x14, 0);
    mmio_write8(c + 0x14, 1 | 2);
    mmio_write32(c + 0x00, 0);
    u32 offered = mmio_read32(c + 0x04);
    mmio_write32(c + 0x08, 0);
    mmio_write32(c + 0x0c, offered & features_low);
    mmio_write32(c + 0x08, 1);
    mmio_write32(c + 0x0c, 1);             /* VIRTIO_F_VERSION_1 */
    mmio_write8(c + 0x14, 1 | 2 | 8);
    return (mmio_read8(c + 0x14) & 8) != 0;
}

/* Queue `index`'s rings at `base` (descriptors, avail at +0x200, used at +0x400). */
void virtio_setup_queue(struct virtio_dev *d, struct virtq *q, u16 index, u16 vector, u32 base) {
    u32 c = d->common;
    q->desc = (volatile struct virtq_desc *)base;
    q->avail = (volatile struct virtq_avail *)(base + 0x200);
    q->used = (volatile struct virtq_used *)(base + 0x400);
    q->index = index;
    q->last_used = 0;
    mmio_write16(c + 0x16, index);         /* queue_select */
    mmio_write16(c + 0x18, VQ_SIZE);       /* queue_size */
    mmio_write16(c + 0x1a, vector);        /* queue_msix_vector */
    mmio_write32(c + 0x20, (u32)q->desc);  mmio_write32(c + 0x24, 0);
    mmio_write32(c + 0x28, (u32)q->avail); mmio_write32(c + 0x2c, 0);
    mmio_write32(c + 0x30, (u32)q->used);  mmio_write32(c + 0x34, 0);
    q->notify = d->notify_base + mmio_read16(c + 0x1e) * d->notify_mult;
    mmio_write16(c + 0x1c, 1);             /* queue_enable */
}

void virtio_driver_ok(struct virtio_dev *d) { mmio_write8(d->common + 0x14, 1 | 2 | 8 | 4); }
void virtio_reset(struct virtio_dev *d) { mmio_write8(d->common + 0x14, 0); } /* the device lets go of the rings */
void virtio_kick(struct virtq *q) { barrier(); mmio_write16(q->notify, q->index); }
int virtio_used_advanced(void *q) { return ((struct virtq *)q)->used->idx != ((struct virtq *)q)->last_used; }
