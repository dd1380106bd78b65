/* Drives an Intel 82540EM as Linux's e1000 does, minimally: reset, link up, one RX and one
 * TX ring of 8 legacy descriptors (SDM §3.2.3, §3.3.3), interrupts on INTx through the
 * IOAPIC (level-triggered; reading ICR lowers the line). */
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

static u32 regs, line, rx_next, tx_next;
static volatile struct rx_desc *rx = (volatile struct rx_desc *)DMA_E1000;
static volatile struct tx_desc *tx = (volatile struct tx_desc *)(DMA_E1000 + 0x1000);
#define RX_BUFFER(i) (DMA_E1000 + 0x2000 + (i) * 2048)
#define TX_BUFFER(i) (DMA_E1000 + 0x6000 + (i) * 2048) /* two, alternating */

static u32 rd(u32 r) { return mmio_read32(regs + r); }
static void wr(u32 r, u32 v) { mmio_write32(regs + r, v); }

/* Interrupt hook: reading ICR clears the causes and lowers INTx (SDM §13.4.17). */
static void acknowledge(void) { (void)rd(ICR); }

static int tx_done(void *d) { return ((volatile struct tx_desc *)d)->status & 1; }
static int rx_ready(void *arg) { (void)arg; return rx[rx_next].status & 1; }

static int e1000_send(const u8 *frame, u32 len) {
    u32 i = tx_next;
    if (len > 2048) return 0;
    memcpy((void *)TX_BUFFER(i % 2), frame, len);
    tx[i] = (struct tx_desc){ TX_BUFFER(i % 2), (u16)len, 0, 0x0b, 0, 0, 0 }; /* EOP | IFCS | RS */
    tx_next = (i + 1) % RING;
    barrier();
    wr(TDT, tx_next);
    return wait_until(tx_done, (void *)&tx[i], 300);
}

static int e1000_receive(u8 *frame, u32 *len, u32 ticks) {
    if (!wait_until(rx_ready, 0, ticks)) return 0;
    u32 n = rx[rx_next].length;
    *len = n > 2048 ? 2048 : n;
    memcpy(frame, (const void *)RX_BUFFER(rx_next), *len);
    rx[rx_next].status = 0;
    barrier();
    wr(RDT, rx_next); /* the descriptor goes back to the device */
    rx_next = (rx_next + 1) % RING;
    return 1;
}

static int e1000_report(void) {
    puts("e1000: "); putdec(irq_count[IRQ_E1000]); puts(" interrupts on IOAPIC pin "); putdec(line); puts("\n");
    return irq_count[IRQ_E1000] > 0;
}

static void e1000_stop(void) {
    wr(IMC, 0xffffffff);
    wr(RCTL, 0);
    wr(TCTL, 0);
    (void)rd(ICR);
}

int e1000_open(u32 slot, struct nic *nic) {
    regs = (u32)pci_bar(slot, 0);
    line = pci_read(slot, 0x3c) & 0xff;
    puts("e1000 00:"); puthex(slot, 2); puts(".0: bar0 0x"); puthex(regs, 8); puts(" ioapic pin "); putdec(line); puts("\n");

    wr(IMC, 0xffffffff);
    wr(CTRL, rd(CTRL) | (1u << 26)); /* RST */
    for (int i = 0; i < 1000 && (rd(CTRL) & (1u << 26)); i++) { }
    wr(IMC, 0xffffffff);
    (void)rd(ICR);
    wr(CTRL, (rd(CTRL) | (1u << 6) | (1u << 5)) & ~(1u << 3)); /* SLU, ASDE; clear LRST */

    u32 ral = rd(RAL0), rah = rd(RAH0);
    for (int i = 0; i < 4; i++) nic->mac[i] = (u8)(ral >> (8 * i));
    nic->mac[4] = (u8)rah; nic->mac[5] = (u8)(rah >> 8);
    puts("e1000: mac "); putmac(nic->mac); puts(rd(STATUS) & 2 ? " link up\n" : " link down\n");

    memset((void *)DMA_E1000, 0, 0x7000);
    for (u32 i = 0; i < RING; i++) rx[i].addr = RX_BUFFER(i);
    rx_next = tx_next = 0;
    wr(RDBAL, DMA_E1000); wr(RDBAH, 0); wr(RDLEN, RING * 16); wr(RDH, 0); wr(RDT, RING - 1);
    wr(TDBAL, DMA_E1000 + 0x1000); wr(TDBAH, 0); wr(TDLEN, RING * 16); wr(TDH, 0); wr(TDT, 0);
    wr(RCTL, (1u << 1) | (1u << 15) | (1u << 26)); /* EN, BAM, SECRC; 2048-byte buffers */
    wr(TCTL, (1u << 1) | (1u << 3) | (0x10u << 4) | (0x40u << 12)); /* EN, PSP, CT, COLD */
    wr(TIPG, 10 | (8u << 10) | (6u << 20));

    irq_hook[IRQ_E1000] = acknowledge;
    ioapic_route(line, IRQ_VECTOR_BASE + IRQ_E1000, 1);
    wr(IMS, (1u << 0) | (1u << 7)); /* TXDW, RXT0 */

    nic->name = "e1000";
    nic->send = e1000_send;
    nic->receive = e1000_receive;
    nic->report_interrupts = e1000_report;
    nic->stop = e1000_stop;
    return 0;
}
