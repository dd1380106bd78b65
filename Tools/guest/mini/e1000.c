/* Drives an Intel 82540EM as Linux's e1000 does, minimally: reset, link up, one RX and one
 * TX ring of 8 legacy descriptors (SDM §3.2.3, §3.3.3), interrupts on INTx through the
 * IOAPIC. Sends an ARP request for 10.0.2.2 and waits for the reply (libslirp answers). */
#include "mini.h"

enum {
    CTRL = 0x0000, STATUS = 0x0008, ICR = 0x00c0, IMS = 0x00d0, IMC = 0x00d8,
    RCTL = 0x0100, TCTL = 0x0400, TIPG = 0x0410,
    RDBAL = 0x2800, RDBAH = 0x2804, RDLEN = 0x2808, RDH = 0x2810, RDT = 0x2818,
    TDBAL = 0x3800, TDBAH = 0x3804, TDLEN = 0x3808, TDH = 0x3810, TDT = 0x3818,
    RAL0 = 0x5400, RAH0 = 0x5404,
};
#define RING 8
struct rx_desc { u64 addr; u16 length, csum; u8 status, errors; u16 special; };
struct tx_desc { u64 addr; u16 length; u8 cso, cmd, status, css; u16 special; };

static u32 regs;
static volatile struct rx_desc *rx = (volatile struct rx_desc *)DMA_E1000;
static volatile struct tx_desc *tx = (volatile struct tx_desc *)(DMA_E1000 + 0x1000);
#define RX_BUFFER(i) (DMA_E1000 + 0x2000 + (i) * 2048)
#define TX_BUFFER (DMA_E1000 + 0x8000)

static u32 rd(u32 r) { return mmio_read32(regs + r); }
static void wr(u32 r, u32 v) { mmio_write32(regs + r, v); }

/* Interrupt hook: reading ICR clears the causes and lowers INTx (SDM §13.4.17). */
static void acknowledge(void) { (void)rd(ICR); }

static int tx_done(void *arg) { (void)arg; return tx[0].status & 1; }
static int rx_any(void *next) { return rx[*(u32 *)next].status & 1; }

int e1000_test(u32 slot) {
    regs = (u32)pci_bar(slot, 0);
    u32 line = pci_read(slot, 0x3c) & 0xff;
    puts("e1000 00:"); puthex(slot, 2); puts(".0: bar0 0x"); puthex(regs, 8); puts(" ioapic pin "); putdec(line); puts("\n");

    wr(IMC, 0xffffffff);
    wr(CTRL, rd(CTRL) | (1u << 26)); /* RST */
    for (int i = 0; i < 1000 && (rd(CTRL) & (1u << 26)); i++) { }
    wr(IMC, 0xffffffff);
    (void)rd(ICR);
    wr(CTRL, (rd(CTRL) | (1u << 6) | (1u << 5)) & ~(1u << 3)); /* SLU, ASDE; clear LRST */

    u8 mac[6];
    u32 ral = rd(RAL0), rah = rd(RAH0);
    for (int i = 0; i < 4; i++) mac[i] = (u8)(ral >> (8 * i));
    mac[4] = (u8)rah; mac[5] = (u8)(rah >> 8);
    puts("e1000: mac "); putmac(mac); puts(rd(STATUS) & 2 ? " link up\n" : " link down\n");

    memset((void *)DMA_E1000, 0, 0x9000);
    for (u32 i = 0; i < RING; i++) rx[i].addr = RX_BUFFER(i);
    wr(RDBAL, DMA_E1000); wr(RDBAH, 0); wr(RDLEN, RING * 16); wr(RDH, 0); wr(RDT, RING - 1);
    wr(TDBAL, DMA_E1000 + 0x1000); wr(TDBAH, 0); wr(TDLEN, RING * 16); wr(TDH, 0); wr(TDT, 0);
    wr(RCTL, (1u << 1) | (1u << 15) | (1u << 26)); /* EN, BAM, SECRC; 2048-byte buffers */
    wr(TCTL, (1u << 1) | (1u << 3) | (0x10u << 4) | (0x40u << 12)); /* EN, PSP, CT, COLD */
    wr(TIPG, 10 | (8u << 10) | (6u << 20));

    irq_hook[IRQ_E1000] = acknowledge;
    ioapic_route(line, IRQ_VECTOR_BASE + IRQ_E1000, 1);
    wr(IMS, (1u << 0) | (1u << 7)); /* TXDW, RXT0 */

    u32 len = arp_request((u8 *)TX_BUFFER, mac);
    tx[0].addr = TX_BUFFER;
    tx[0].length = (u16)len;
    tx[0].cmd = 0x0b; /* EOP | IFCS | RS */
    barrier();
    wr(TDT, 1);
    int ok = wait_until(tx_done, 0, 300);
    puts(ok ? "e1000: sent ARP request\n" : "e1000: transmit timed out\n");

    u32 next = 0, got = 0;
    while (ok && !got && wait_until(rx_any, &next, 300)) {
        const u8 *frame = (const u8 *)RX_BUFFER(next);
        if (is_arp_reply(frame, rx[next].length)) {
            puts("e1000: received ARP reply from 10.0.2.2 at "); putmac(frame + 22); puts("\n");
            got = 1;
        }
        rx[next].status = 0;
        barrier();
        wr(RDT, next);
        next = (next + 1) % RING;
    }
    u32 irqs = irq_count[IRQ_E1000];
    puts("e1000: "); putdec(irqs); puts(" interrupts on IOAPIC pin "); putdec(line); puts("\n");
    wr(IMC, 0xffffffff);
    wr(RCTL, 0);
    wr(TCTL, 0);
    (void)rd(ICR);
    return ok && got && irqs > 0 ? 0 : -1;
}
