/* Interrupts without firmware: the 8259s masked (else an IOAPIC interrupt also arrives
 * through the PIC's virtual wire), the LAPIC enabled, an IDT whose vectors 0x30-0x33 count
 * arrivals. Handlers return with `popfl; ret $8` instead of `iret`, which the
 * software-assisted KVM of the build machines cannot emulate (see shared/README.md). */
#include "mini.h"

#define LAPIC 0xfee00000u
#define IOAPIC 0xfec00000u

volatile u32 irq_count[IRQ_VECTORS];
void (*irq_hook[IRQ_VECTORS])(void);

struct idt_entry { u16 offset_lo, selector; u8 zero, type; u16 offset_hi; } __attribute__((packed));
static struct idt_entry idt[256];
extern void isr_30(void), isr_31(void), isr_32(void), isr_33(void);

/* Called from the stubs in entry.S with the vector number. */
void irq_handler(u32 vector) {
    u32 i = vector - IRQ_VECTOR_BASE;
    if (i < IRQ_VECTORS) {
        if (irq_hook[i]) irq_hook[i](); /* device acknowledges (e1000: read ICR lowers INTx) */
        irq_count[i]++;
    }
    mmio_write32(LAPIC + 0xb0, 0); /* EOI (for level-triggered pins this also clears remote IRR) */
}

static void set_gate(u8 vector, void (*handler)(void)) {
    u32 a = (u32)handler;
    idt[vector] = (struct idt_entry){ (u16)a, 0x10, 0, 0x8e, (u16)(a >> 16) }; /* 32-bit interrupt gate */
}

void irq_init(void) {
    outb(0x21, 0xff); /* mask the master and slave 8259 */
    outb(0xa1, 0xff);
    set_gate(0x30, isr_30); set_gate(0x31, isr_31); set_gate(0x32, isr_32); set_gate(0x33, isr_33);
    struct { u16 limit; u32 base; } __attribute__((packed)) idtr = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
    mmio_write32(LAPIC + 0xf0, 0x1ff); /* spurious-interrupt vector 0xff, APIC software-enabled */
}

/* IOAPIC pin -> vector: active high, fixed delivery to APIC 0, level or edge triggered. */
void ioapic_route(u32 pin, u8 vector, int level) {
    mmio_write32(IOAPIC, 0x11 + 2 * pin);
    mmio_write32(IOAPIC + 0x10, 0);
    mmio_write32(IOAPIC, 0x10 + 2 * pin);
    mmio_write32(IOAPIC + 0x10, vector | (level ? 1u << 15 : 0));
}

/* The PIT (channel 0, mode 2, ~100 Hz) on IOAPIC pin 0 as the timeout clock of wait_for. */
void timer_start(void) {
    ioapic_route(0, IRQ_VECTOR_BASE + IRQ_TIMER, 0);
    outb(0x43, 0x34);
    outb(0x40, 11932 & 0xff); /* 1193182 Hz / 11932 = 100 Hz */
    outb(0x40, 11932 >> 8);
}

/* Sleeps in `sti; hlt` until cond(arg) holds, or `ticks` timer ticks (10 ms) pass.
 * cond is checked with interrupts off, and `sti; hlt` cannot lose a wake-up (sti's shadow). */
int wait_until(int (*cond)(void *), void *arg, u32 ticks) {
    u32 start = irq_count[IRQ_TIMER];
    int ok;
    for (;;) {
        __asm__ volatile("cli" ::: "memory");
        if ((ok = cond(arg)) || irq_count[IRQ_TIMER] - start >= ticks) break;
        __asm__ volatile("sti; hlt" ::: "memory");
    }
    __asm__ volatile("sti" ::: "memory");
    return ok;
}
