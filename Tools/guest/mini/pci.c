/* PCI configuration mechanism #1 (0xCF8/0xCFC) on bus 0. */
#include "mini.h"

u32 pci_read(u32 slot, u32 offset) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (offset & 0xfc));
    return inl(0xcfc);
}

void pci_write(u32 slot, u32 offset, u32 value) {
    outl(0xcf8, 0x80000000u | (slot << 11) | (offset & 0xfc));
    outl(0xcfc, value);
}

int pci_find(u16 vendor, u16 device, u32 *slot) {
    for (u32 s = 1; s < 32; s++) {
        if (pci_read(s, 0) == ((u32)device << 16 | vendor)) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}

/* The address a BAR decodes at (the VMM assigned it, as firmware would). */
u64 pci_bar(u32 slot, u32 bar) {
    u32 lo = pci_read(slot, 0x10 + 4 * bar);
    if (lo & 1) return lo & ~3u;
    u64 a = lo & ~15u;
    if (((lo >> 1) & 3) == 2) a |= (u64)pci_read(slot, 0x14 + 4 * bar) << 32;
    return a;
}
