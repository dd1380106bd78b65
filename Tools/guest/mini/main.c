/* swiftvmm mini guest: a freestanding program booted through PVH that reports what the
 * VMM handed it (command line, memory map) and what it finds on PCI bus 0, over COM1,
 * then resets the machine through the i8042 so the VMM exits 0.
 *
 * Command line words it understands:
 *   exits=N      also do N port-I/O writes, N MMIO writes and N MMIO reads (exit-path
 *                benchmark), bracketed by boot-marker writes 1, 2, 3, 4 to port 0x440
 *   mmio=0xADDR  the MMIO address those accesses go to (default: unclaimed 0xd0000000)
 *   nettest=1    drive every e1000 (INTx through the IOAPIC) and virtio-net (MSI-X) found:
 *                send an ARP request for 10.0.2.2 and wait for the reply (net=user answers)
 *   arpserve=1   be 10.0.2.2 on the first NIC: answer one ARP request (a second VM's nettest)
 *   toggles=N    with nettest, first turn each NIC's memory decoding off and on N times
 *                (the VMM moves the device's doorbells off the bus and back each time)
 *   blktest=1    write, read back, flush and identify sector 1 of every virtio-blk found
 * Port I/O costs an exit each (~15 us under software-assisted KVM), so it stays sparse. */
#include "mini.h"

/* hvm_start_info (Xen public/arch-x86/hvm/start_info.h), version 1. */
struct start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};
struct memmap_entry { u64 addr, size; u32 type, reserved; };

/* Value of "key=" in the command line, or 0 when absent; decimal or 0x-hex. */
static int cmdline_value(const char *cmdline, const char *key, u32 *out) {
    for (const char *p = cmdline; p && *p; p++) {
        if (p != cmdline && p[-1] != ' ') continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (*k || *q != '=') continue;
        q++;
        u32 v = 0, base = 10;
        if (q[0] == '0' && q[1] == 'x') { base = 16; q += 2; }
        for (;; q++) {
            u32 d;
            if (*q >= '0' && *q <= '9') d = (u32)(*q - '0');
            else if (base == 16 && *q >= 'a' && *q <= 'f') d = (u32)(*q - 'a' + 10);
            else break;
            v = v * base + d;
        }
        *out = v;
        return 1;
    }
    return 0;
}

static void report_pci(void) {
    u32 found = 0;
    for (u32 slot = 0; slot < 32; slot++) {
        u32 id = pci_read(slot, 0);
        if ((id & 0xffff) == 0xffff) continue;
        found++;
        u32 class = pci_read(slot, 8) >> 8;
        puts("pci 00:"); puthex(slot, 2); puts(".0 "); puthex(id & 0xffff, 4); putc(':'); puthex(id >> 16, 4);
        puts(" class "); puthex(class, 6);
        if (slot != 0) {
            u32 intr = pci_read(slot, 0x3c);
            u32 pin = (intr >> 8) & 0xff;
            if (pin) { puts(" int "); putc((char)('A' + pin - 1)); puts(" line "); putdec(intr & 0xff); }
            for (u32 bar = 0; bar < 6; bar++) {
                u32 v = pci_read(slot, 0x10 + 4 * bar);
                if (!v) continue;
                puts(" bar"); putdec(bar); puts(v & 1 ? "=io:" : "=mem:"); puthex(v & (v & 1 ? ~3u : ~15u), 8);
                if (!(v & 1) && ((v >> 1) & 3) == 2) bar++; /* 64-bit BAR: skip the high half */
            }
        }
        puts("\n");
    }
    puts("pci: "); putdec(found); puts(" functions\n");
}

static void exit_benchmark(u32 n, u32 mmio) {
    volatile u32 *reg = (volatile u32 *)mmio;
    outb(BOOT_MARKER, 1);
    for (u32 i = 0; i < n; i++) outb(COM1 + 7, (u8)i); /* scratch register: a claimed port */
    outb(BOOT_MARKER, 2);
    for (u32 i = 0; i < n; i++) *reg = i;
    outb(BOOT_MARKER, 3);
    for (u32 i = 0; i < n; i++) (void)*reg;
    outb(BOOT_MARKER, 4);
    puts("exits: "); putdec(n); puts(" pio + "); putdec(n); puts(" mmio writes + "); putdec(n);
    puts(" mmio reads at 0x"); puthex(mmio, 8); puts("\n");
}

/* nettest: ask 10.0.2.2 for its MAC on every NIC. arpserve: be 10.0.2.2 on the first NIC
 * and answer one ARP request (waiting up to 30 s for it). */
static int run_nic(struct nic *nic, int serve) {
    static u8 frame[2048], reply[64];
    u32 len;
    if (serve) {
        puts(nic->name); puts(": serving ARP for 10.0.2.2\n");
        for (u32 tries = 0; tries < 100; tries++) {
            if (!nic->receive(frame, &len, 300)) continue;
            if (!is_arp_request(frame, len)) continue;
            int sent = nic->send(reply, arp_reply(reply, nic->mac, frame));
            puts(nic->name); puts(sent ? ": answered ARP request from " : ": reply not sent to "); putmac(frame + 6); puts("\n");
            return sent && nic->report_interrupts() ? 0 : -1;
        }
        puts(nic->name); puts(": no ARP request arrived\n");
        return -1;
    }
    int ok = nic->send(frame, arp_request(frame, nic->mac));
    puts(nic->name); puts(ok ? ": sent ARP request\n" : ": transmit timed out\n");
    int got = 0;
    for (u32 frames = 0; ok && !got && frames < 16 && nic->receive(frame, &len, 300); frames++) {
        if (!is_arp_reply(frame, len)) continue;
        puts(nic->name); puts(": received ARP reply from 10.0.2.2 at "); putmac(frame + 22); puts("\n");
        got = 1;
    }
    return ok && got && nic->report_interrupts() ? 0 : -1;
}

/* Memory decoding off and on, n times: what a driver probing BARs does, many times over. */
static void toggle_decoding(u32 slot, u32 n) {
    u32 command = pci_read(slot, 4) & 0xffff; /* status (upper half) is write-1-to-clear: 0 */
    for (u32 i = 0; i < n; i++) {
        pci_write(slot, 4, command & ~2u);
        pci_write(slot, 4, command);
    }
    puts("pci 00:"); puthex(slot, 2); puts(".0: memory decoding toggled "); putdec(n); puts(" times\n");
}

static void net_test(int serve, u32 toggles) {
    irq_init();
    timer_start();
    int failures = 0, tested = 0;
    for (u32 slot = 1; slot < 32 && !(serve && tested); slot++) {
        u32 id = pci_read(slot, 0);
        struct nic nic;
        int opened;
        if (id == 0x100e8086u) opened = e1000_open(slot, &nic);
        else if (id == 0x10411af4u) opened = virtio_net_open(slot, &nic);
        else continue;
        tested++;
        if (opened == 0 && toggles) toggle_decoding(slot, toggles);
        failures += opened != 0 || run_nic(&nic, serve) != 0;
        if (opened == 0) nic.stop();
    }
    puts(serve ? "arpserve: " : "nettest: "); putdec(tested); puts(failures || !tested ? " devices, FAILED\n" : " devices, ok\n");
}

static void blk_test(void) {
    irq_init();
    timer_start();
    int failures = 0, tested = 0;
    for (u32 slot = 1; slot < 32; slot++) {
        if (pci_read(slot, 0) != 0x10421af4u) continue;
        tested++;
        failures += virtio_blk_test(slot) != 0;
    }
    puts("blktest: "); putdec(tested); puts(failures || !tested ? " devices, FAILED\n" : " devices, ok\n");
}

void mini_main(const struct start_info *si) {
    puts("swiftvmm mini guest\n");
    if (si->magic != 0x336ec578) { puts("bad hvm_start_info magic\n"); goto reset; }
    const char *cmdline = (const char *)(u32)si->cmdline_paddr;
    puts("cmdline: "); puts(cmdline ? cmdline : ""); puts("\n");
    const struct memmap_entry *map = (const struct memmap_entry *)(u32)si->memmap_paddr;
    u64 ram = 0;
    for (u32 i = 0; i < si->memmap_entries; i++) {
        puts("memmap: "); puthex(map[i].addr, 12); putc('-'); puthex(map[i].addr + map[i].size, 12);
        puts(map[i].type == 1 ? " ram\n" : " reserved\n");
        if (map[i].type == 1) ram += map[i].size;
    }
    puts("ram: "); putdec((u32)(ram >> 20)); puts(" MiB\n");
    if (si->nr_modules) {
        const u64 *mod = (const u64 *)(u32)si->modlist_paddr;
        puts("initrd: "); putdec((u32)mod[1]); puts(" bytes at 0x"); puthex(mod[0], 8); puts("\n");
    }
    report_pci();
    u32 n, mmio = 0xd0000000u;
    if (cmdline_value(cmdline, "exits", &n)) {
        cmdline_value(cmdline, "mmio", &mmio);
        exit_benchmark(n, mmio);
    }
    u32 toggles = 0;
    cmdline_value(cmdline, "toggles", &toggles);
    if (cmdline_value(cmdline, "nettest", &n) && n) net_test(0, toggles);
    if (cmdline_value(cmdline, "arpserve", &n) && n) net_test(1, 0);
    if (cmdline_value(cmdline, "blktest", &n) && n) blk_test();
    if (cmdline_value(cmdline, "ticks", &n) && n) {
        /* Runs until stopped from outside, printing a counter about every n ms of busy
         * work: the QMP tests pause and resume vCPUs and watch the ticks stop and resume. */
        for (u32 t = 0;; t++) {
            for (volatile u32 spin = 0; spin < n * 300000u; spin++) {}
            puts("tick "); putdec(t); puts("\n");
        }
    }
reset:
    puts("mini: done, resetting\n");
    outb(0x64, 0xfe); /* i8042: pulse the CPU reset line */
    for (;;) __asm__ volatile("cli; hlt");
}
