/* Drives a virtio-net device over the modern PCI transport (virtio 1.2 §4.1): finds the
 * common/notify/device capabilities, negotiates VERSION_1 (+MAC), sets up the receive and
 * transmit split virtqueues (§2.7) with MSI-X vectors (§4.1.4.3, §4.1.5.1.2). */
#include "mini.h"

#define QSIZE 8
#define RX_BUFFERS 4
#define HDR 12 /* struct virtio_net_hdr with num_buffers (§5.1.6) */
struct desc { u64 addr; u32 len; u16 flags, next; };
struct ring { u16 flags, idx, ring[QSIZE], event; };
struct used { u16 flags, idx; struct { u32 id, len; } ring[QSIZE]; u16 event; };
struct queue { volatile struct desc *desc; volatile struct ring *avail; volatile struct used *used; u32 notify; u16 index, last_used; };

static u32 common, notify_base, notify_mult, device_cfg;
static struct queue rxq, txq;
#define RX_BUFFER(i) (DMA_VIRTIO + 0x4000 + (i) * 2048u)
#define TX_BUFFER (DMA_VIRTIO + 0x3000)

static u32 cap_address(u32 slot, u32 cap) {
    u32 bar = pci_read(slot, cap + 4) & 0xff;
    return (u32)pci_bar(slot, bar) + pci_read(slot, cap + 8);
}

static int find_capabilities(u32 slot, u32 *msix_cap) {
    for (u32 cap = pci_read(slot, 0x34) & 0xfc, n = 0; cap && n < 32; cap = (pci_read(slot, cap) >> 8) & 0xfc, n++) {
        u32 head = pci_read(slot, cap);
        if ((head & 0xff) == 0x11) *msix_cap = cap;
        if ((head & 0xff) != 0x09) continue;
        switch ((head >> 24) & 0xff) { /* cfg_type */
        case 1: common = cap_address(slot, cap); break;
        case 2: notify_base = cap_address(slot, cap); notify_mult = pci_read(slot, cap + 16); break;
        case 4: device_cfg = cap_address(slot, cap); break;
        }
    }
    return common && notify_base && device_cfg && *msix_cap;
}

/* Queue `index`'s rings at a fixed place in the DMA area (4 KiB per queue). */
static void setup_queue(struct queue *q, u16 index, u16 vector) {
    u32 base = DMA_VIRTIO + index * 0x1000u;
    q->desc = (volatile struct desc *)base;
    q->avail = (volatile struct ring *)(base + 0x200);
    q->used = (volatile struct used *)(base + 0x400);
    q->index = index;
    q->last_used = 0;
    mmio_write16(common + 0x16, index);       /* queue_select */
    mmio_write16(common + 0x18, QSIZE);       /* queue_size */
    mmio_write16(common + 0x1a, vector);      /* queue_msix_vector */
    mmio_write32(common + 0x20, (u32)q->desc);  mmio_write32(common + 0x24, 0);
    mmio_write32(common + 0x28, (u32)q->avail); mmio_write32(common + 0x2c, 0);
    mmio_write32(common + 0x30, (u32)q->used);  mmio_write32(common + 0x34, 0);
    q->notify = notify_base + mmio_read16(common + 0x1e) * notify_mult;
    mmio_write16(common + 0x1c, 1);           /* queue_enable */
}

static void kick(struct queue *q) { barrier(); mmio_write16(q->notify, q->index); }
static int used_advanced(void *q) { return ((struct queue *)q)->used->idx != ((struct queue *)q)->last_used; }

static int virtio_send(const u8 *frame, u32 len) {
    if (len > 2048 - HDR) return 0;
    memset((void *)TX_BUFFER, 0, HDR);
    memcpy((u8 *)TX_BUFFER + HDR, frame, len);
    u16 slot = txq.avail->idx % QSIZE;
    txq.desc[slot] = (struct desc){ TX_BUFFER, HDR + len, 0, 0 };
    txq.avail->ring[slot] = slot;
    barrier();
    txq.avail->idx++;
    kick(&txq);
    int ok = wait_until(used_advanced, &txq, 300);
    txq.last_used = txq.used->idx;
    return ok;
}

static int virtio_receive(u8 *frame, u32 *len, u32 ticks) {
    if (!wait_until(used_advanced, &rxq, ticks)) return 0;
    u32 at = rxq.last_used % QSIZE;
    u32 id = rxq.used->ring[at].id, n = rxq.used->ring[at].len;
    rxq.last_used++;
    if (id >= RX_BUFFERS) return 0;
    n = n < HDR ? 0 : n - HDR;
    *len = n > 2048 - HDR ? 2048 - HDR : n;
    memcpy(frame, (const u8 *)RX_BUFFER(id) + HDR, *len);
    rxq.avail->ring[rxq.avail->idx % QSIZE] = (u16)id; /* the buffer goes back to the device */
    barrier();
    rxq.avail->idx++;
    kick(&rxq);
    return 1;
}

static int virtio_report(void) {
    puts("virtio-net: "); putdec(irq_count[IRQ_VIRTIO_RX]); puts(" rx and "); putdec(irq_count[IRQ_VIRTIO_TX]);
    puts(" tx MSI-X interrupts\n");
    return irq_count[IRQ_VIRTIO_RX] > 0 && irq_count[IRQ_VIRTIO_TX] > 0;
}

static void virtio_stop(void) { mmio_write8(common + 0x14, 0); } /* reset: the device lets go of the rings */

int virtio_net_open(u32 slot, struct nic *nic) {
    u32 msix = 0;
    if (!find_capabilities(slot, &msix)) { puts("virtio-net: capabilities missing\n"); return -1; }
    puts("virtio-net 00:"); puthex(slot, 2); puts(".0: common cfg 0x"); puthex(common, 8); puts("\n");

    /* MSI-X: table entries 0 (rx) and 1 (tx) -> LAPIC 0, vectors 0x31/0x32; enable, unmask. */
    u32 table_info = pci_read(slot, msix + 4);
    u32 table = (u32)pci_bar(slot, table_info & 7) + (table_info & ~7u);
    for (u32 v = 0; v < 2; v++) {
        mmio_write32(table + 16 * v, 0xfee00000u);
        mmio_write32(table + 16 * v + 4, 0);
        mmio_write32(table + 16 * v + 8, IRQ_VECTOR_BASE + IRQ_VIRTIO_RX + v);
        mmio_write32(table + 16 * v + 12, 0);
    }
    pci_write(slot, msix, (pci_read(slot, msix) | (1u << 31)) & ~(1u << 30));

    mmio_write8(common + 0x14, 0);              /* reset */
    mmio_write8(common + 0x14, 1 | 2);          /* ACKNOWLEDGE | DRIVER */
    mmio_write32(common + 0x00, 0);
    u32 offered = mmio_read32(common + 0x04);
    mmio_write32(common + 0x08, 0);
    mmio_write32(common + 0x0c, offered & (1u << 5)); /* VIRTIO_NET_F_MAC if offered */
    mmio_write32(common + 0x08, 1);
    mmio_write32(common + 0x0c, 1);             /* VIRTIO_F_VERSION_1 */
    mmio_write8(common + 0x14, 1 | 2 | 8);      /* FEATURES_OK */
    if (!(mmio_read8(common + 0x14) & 8)) { puts("virtio-net: features not accepted\n"); return -1; }
    mmio_write16(common + 0x10, 0xffff);        /* no config-change vector */
    memset((void *)DMA_VIRTIO, 0, 0x6000);
    setup_queue(&rxq, 0, 0);
    setup_queue(&txq, 1, 1);
    mmio_write8(common + 0x14, 1 | 2 | 8 | 4);  /* DRIVER_OK */

    for (int i = 0; i < 6; i++) nic->mac[i] = mmio_read8(device_cfg + i);
    puts("virtio-net: mac "); putmac(nic->mac); puts("\n");

    for (u16 i = 0; i < RX_BUFFERS; i++) { /* device-writable buffers for header + frame */
        rxq.desc[i] = (struct desc){ RX_BUFFER(i), 2048, 2, 0 };
        rxq.avail->ring[i] = i;
    }
    barrier();
    rxq.avail->idx = RX_BUFFERS;
    kick(&rxq);

    nic->name = "virtio-net";
    nic->send = virtio_send;
    nic->receive = virtio_receive;
    nic->report_interrupts = virtio_report;
    nic->stop = virtio_stop;
    return 0;
}
