/* Drives a virtio-net device over the modern PCI transport (virtio 1.2 §4.1): finds the
 * common/notify/device capabilities, negotiates VERSION_1 (+MAC), sets up the receive and
 * transmit split virtqueues (§2.7) with MSI-X vectors (§4.1.4.3, §4.1.5.1.2). */
#include "mini.h"

#define RX_BUFFERS 4
#define HDR 12 /* struct virtio_net_hdr with num_buffers (§5.1.6) */

static struct virtio_dev dev;
static struct virtq rxq, txq;
#define RX_BUFFER(i) (DMA_VIRTIO + 0x4000 + (i) * 2048u)
#define TX_BUFFER (DMA_VIRTIO + 0x3000)

static int virtio_send(const u8 *frame, u32 len) {
    if (len > 2048 - HDR) return 0;
    memset((void *)TX_BUFFER, 0, HDR);
    memcpy((u8 *)TX_BUFFER + HDR, frame, len);
    u16 slot = txq.avail->idx % VQ_SIZE;
    txq.desc[slot] = (struct virtq_desc){ TX_BUFFER, HDR + len, 0, 0 };
    txq.avail->ring[slot] = slot;
    barrier();
    txq.avail->idx++;
    virtio_kick(&txq);
    int ok = wait_until(virtio_used_advanced, &txq, 300);
    txq.last_used = txq.used->idx;
    return ok;
}

static int virtio_receive(u8 *frame, u32 *len, u32 ticks) {
    if (!wait_until(virtio_used_advanced, &rxq, ticks)) return 0;
    u32 at = rxq.last_used % VQ_SIZE;
    u32 id = rxq.used->ring[at].id, n = rxq.used->ring[at].len;
    rxq.last_used++;
    if (id >= RX_BUFFERS) return 0;
    n = n < HDR ? 0 : n - HDR;
    *len = n > 2048 - HDR ? 2048 - HDR : n;
    memcpy(frame, (const u8 *)RX_BUFFER(id) + HDR, *len);
    rxq.avail->ring[rxq.avail->idx % VQ_SIZE] = (u16)id; /* the buffer goes back to the device */
    barrier();
    rxq.avail->idx++;
    virtio_kick(&rxq);
    return 1;
}

static int virtio_report(void) {
    puts("virtio-net: "); putdec(irq_count[IRQ_VIRTIO_RX]); puts(" rx and "); putdec(irq_count[IRQ_VIRTIO_TX]);
    puts(" tx MSI-X interrupts\n");
    return irq_count[IRQ_VIRTIO_RX] > 0 && irq_count[IRQ_VIRTIO_TX] > 0;
}

static void virtio_stop(void) { virtio_reset(&dev); }

int virtio_net_open(u32 slot, struct nic *nic) {
    if (!virtio_find(slot, &dev)) { puts("virtio-net: capabilities missing\n"); return -1; }
    puts("virtio-net 00:"); puthex(slot, 2); puts(".0: common cfg 0x"); puthex(dev.common, 8); puts("\n");

    /* MSI-X: table entries 0 (rx) and 1 (tx) -> LAPIC 0, vectors 0x31/0x32; enable, unmask. */
    u32 table_info = pci_read(slot, dev.msix + 4);
    u32 table = (u32)pci_bar(slot, table_info & 7) + (table_info & ~7u);
    for (u32 v = 0; v < 2; v++) {
        mmio_write32(table + 16 * v, 0xfee00000u);
        mmio_write32(table + 16 * v + 4, 0);
        mmio_write32(table + 16 * v + 8, IRQ_VECTOR_BASE + IRQ_VIRTIO_RX + v);
        mmio_write32(table + 16 * v + 12, 0);
    }
    pci_write(slot, dev.msix, (pci_read(slot, dev.msix) | (1u << 31)) & ~(1u << 30));

    if (!virtio_negotiate(&dev, 1u << 5)) { puts("virtio-net: features not accepted\n"); return -1; } /* VIRTIO_NET_F_MAC */
    mmio_write16(dev.common + 0x10, 0xffff);    /* no config-change vector */
    memset((void *)DMA_VIRTIO, 0, 0x6000);
    virtio_setup_queue(&dev, &rxq, 0, 0, DMA_VIRTIO);
    virtio_setup_queue(&dev, &txq, 1, 1, DMA_VIRTIO + 0x1000);
    virtio_driver_ok(&dev);

    for (int i = 0; i < 6; i++) nic->mac[i] = mmio_read8(dev.device_cfg + i);
    puts("virtio-net: mac "); putmac(nic->mac); puts("\n");

    for (u16 i = 0; i < RX_BUFFERS; i++) { /* device-writable buffers for header + frame */
        rxq.desc[i] = (struct virtq_desc){ RX_BUFFER(i), 2048, 2, 0 };
        rxq.avail->ring[i] = i;
    }
    barrier();
    rxq.avail->idx = RX_BUFFERS;
    virtio_kick(&rxq);

    nic->name = "virtio-net";
    nic->send = virtio_send;
    nic->receive = virtio_receive;
    nic->report_interrupts = virtio_report;
    nic->stop = virtio_stop;
    return 0;
}
