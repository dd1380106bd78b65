/* Drives a virtio-blk device (virtio 1.2 §5.2) the way Linux's virtio_blk lays out a
 * request (header, data, status byte): writes a pattern to sector 1, reads it back,
 * flushes, and asks for the serial (GET_ID). One split queue, polled (no interrupt). */
#include "mini.h"

#define DMA_BLK 0x600000u
struct blk_header { u32 type, ioprio; u64 sector; };
enum { T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8 };

static struct virtio_dev dev;
static struct virtq q;
#define HEADER ((volatile struct blk_header *)(DMA_BLK + 0x1000))
#define STATUS ((volatile u8 *)(DMA_BLK + 0x1100))
#define DATA ((u8 *)(DMA_BLK + 0x2000))

/* One request: header (device-readable), `len` bytes of data (readable for OUT,
 * writable otherwise), status (writable). Returns the status byte, or 0xff on timeout. */
static u8 request(u32 type, u64 sector, u32 len) {
    HEADER->type = type; HEADER->ioprio = 0; HEADER->sector = sector;
    *STATUS = 0xee;
    u16 n = 0;
    q.desc[n] = (struct virtq_desc){ (u32)HEADER, 16, 1, (u16)(n + 1) }; n++;
    if (len) { q.desc[n] = (struct virtq_desc){ (u32)DATA, len, (u16)(1 | (type == T_OUT ? 0 : 2)), (u16)(n + 1) }; n++; }
    q.desc[n] = (struct virtq_desc){ (u32)STATUS, 1, 2, 0 };
    q.avail->ring[q.avail->idx % VQ_SIZE] = 0;
    barrier();
    q.avail->idx++;
    virtio_kick(&q);
    if (!wait_until(virtio_used_advanced, &q, 300)) return 0xff;
    q.last_used = q.used->idx;
    barrier();
    return *STATUS;
}

int virtio_blk_test(u32 slot) {
    if (!virtio_find(slot, &dev)) { puts("virtio-blk: capabilities missing\n"); return -1; }
    if (!virtio_negotiate(&dev, 1u << 9)) { puts("virtio-blk: features not accepted\n"); return -1; } /* FLUSH */
    mmio_write16(dev.common + 0x10, 0xffff);    /* no config-change vector */
    memset((void *)DMA_BLK, 0, 0x3000);
    virtio_setup_queue(&dev, &q, 0, 0xffff, DMA_BLK);
    virtio_driver_ok(&dev);
    u32 capacity = mmio_read32(dev.device_cfg);  /* low half of the 512-byte sector count */
    puts("virtio-blk 00:"); puthex(slot, 2); puts(".0: "); putdec(capacity); puts(" sectors\n");

    for (u32 i = 0; i < 512; i++) DATA[i] = (u8)(i * 7 + 3);
    u8 wrote = request(T_OUT, 1, 512);
    memset(DATA, 0, 512);
    u8 read = request(T_IN, 1, 512);
    int same = 1;
    for (u32 i = 0; i < 512; i++) same &= DATA[i] == (u8)(i * 7 + 3);
    u8 flushed = request(T_FLUSH, 0, 0);
    memset(DATA, 0, 21);
    u8 ident = request(T_GET_ID, 0, 20);
    puts("virtio-blk: write "); putdec(wrote); puts(", read "); putdec(read); puts(same ? " (same data)" : " (DIFFERENT data)");
    puts(", flush "); putdec(flushed); puts(", serial '"); puts((const char *)DATA); puts("'\n");
    virtio_reset(&dev);
    return wrote == 0 && read == 0 && same && flushed == 0 && ident == 0 ? 0 : -1;
}
