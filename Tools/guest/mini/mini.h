/* Shared by the mini guest's files: fixed-width types, port and MMIO access, console,
 * PCI config access, interrupts, and the NIC tests. Freestanding: no libc. */
#ifndef MINI_H
#define MINI_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define BOOT_MARKER 0x440

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u32 mmio_read32(u32 a) { return *(volatile u32 *)a; }
static inline void mmio_write32(u32 a, u32 v) { *(volatile u32 *)a = v; }
static inline u16 mmio_read16(u32 a) { return *(volatile u16 *)a; }
static inline void mmio_write16(u32 a, u16 v) { *(volatile u16 *)a = v; }
static inline u8 mmio_read8(u32 a) { return *(volatile u8 *)a; }
static inline void mmio_write8(u32 a, u8 v) { *(volatile u8 *)a = v; }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* console.c */
void putc(char c);
void puts(const char *s);
void puthex(u64 v, int digits);
void putdec(u32 v);
void putmac(const u8 *mac);
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);

/* pci.c */
u32 pci_read(u32 slot, u32 offset);
void pci_write(u32 slot, u32 offset, u32 value);
int pci_find(u16 vendor, u16 device, u32 *slot);
u64 pci_bar(u32 slot, u32 bar);

/* irq.c: vector 0x30 + i counts in irq_count[i]; i = 3 is the PIT timeout clock. */
#define IRQ_VECTOR_BASE 0x30
#define IRQ_VECTORS 4
#define IRQ_E1000 0
#define IRQ_VIRTIO_RX 1
#define IRQ_VIRTIO_TX 2
#define IRQ_TIMER 3
extern volatile u32 irq_count[IRQ_VECTORS];
extern void (*irq_hook[IRQ_VECTORS])(void);
void irq_init(void);
void ioapic_route(u32 pin, u8 vector, int level);
void timer_start(void);
int wait_until(int (*cond)(void *), void *arg, u32 ticks);

/* A NIC as the network tests use it. Drivers print what they set up. */
struct nic {
    const char *name;
    u8 mac[6];
    /* Queues one frame; returns 1 once the device reported it sent (within ~3 s). */
    int (*send)(const u8 *frame, u32 len);
    /* Waits up to `ticks` (10 ms each) for a frame; copies it (at most 2048 bytes). */
    int (*receive)(u8 *frame, u32 *len, u32 ticks);
    /* Prints the interrupts seen; returns 1 when every expected kind arrived. */
    int (*report_interrupts)(void);
    /* Quiesces the device (no more DMA). */
    void (*stop)(void);
};
int e1000_open(u32 slot, struct nic *nic);
int virtio_net_open(u32 slot, struct nic *nic);

/* Each NIC gets a DMA area at a fixed physical address (RAM is at least 16 MiB). */
#define DMA_E1000 0x400000u
#define DMA_VIRTIO 0x500000u

/* ARP between 10.0.2.15 (asking) and 10.0.2.2 (answering): libslirp (net=user), a TAP
 * holding 10.0.2.2, or a second mini guest in `arpserve` mode answers. */
u32 arp_request(u8 *frame, const u8 *mac);
int is_arp_reply(const u8 *frame, u32 len);
int is_arp_request(const u8 *frame, u32 len);
u32 arp_reply(u8 *frame, const u8 *mac, const u8 *request);


/* The modern virtio-pci transport (virtio 1.2 §4.1) and split virtqueues (§2.7) as the
 * mini guest's virtio drivers use them (virtio_pci.c). */
#define VQ_SIZE 8
struct virtq_desc { u64 addr; u32 len; u16 flags, next; };
struct virtq_avail { u16 flags, idx, ring[VQ_SIZE], event; };
struct virtq_used { u16 flags, idx; struct { u32 id, len; } ring[VQ_SIZE]; u16 event; };
struct virtq { volatile struct virtq_desc *desc; volatile struct virtq_avail *avail; volatile struct virtq_used *used; u32 notify; u16 index, last_used; };
struct virtio_dev { u32 slot, common, notify_base, notify_mult, device_cfg, msix; };
int virtio_find(u32 slot, struct virtio_dev *d);
int virtio_negotiate(struct virtio_dev *d, u32 features_low);
void virtio_setup_queue(struct virtio_dev *d, struct virtq *q, u16 index, u16 vector, u32 base);
void virtio_driver_ok(struct virtio_dev *d);
void virtio_reset(struct virtio_dev *d);
void virtio_kick(struct virtq *q);
int virtio_used_advanced(void *q);
int virtio_blk_test(u32 slot);

#endif
