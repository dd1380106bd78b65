/* The raw limit for the exit path: the same mini guest (Tools/guest/mini, a 32-bit PVH
 * ELF) under the smallest KVM loop that runs it — one vCPU, an in-kernel irqchip as
 * swiftvmm has, KVM_RUN and a switch on the exit reason, no device model, no bus.
 *   raw-kvm MINI_ELF EXITS KEY
 * The guest writes boot markers 1, 2, 3 to port 0x440 around EXITS port writes (to the
 * UART scratch register) and EXITS MMIO writes (to an unclaimed address); the marker
 * times give exits/s for each kind. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

#define MEMORY_SIZE (64u << 20)
#define START_INFO 0x6000u
#define CMDLINE 0x7000u
#define MEMMAP 0x8000u

typedef struct { unsigned char ident[16]; uint16_t type, machine; uint32_t version, entry, phoff, shoff, flags;
                 uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx; } Elf32Header;
typedef struct { uint32_t type, offset, vaddr, paddr, filesz, memsz, flags, align; } Elf32Program;

static void die(const char *what) { fprintf(stderr, "raw-kvm: %s: %s\n", what, strerror(errno)); exit(1); }

/* Loads PT_LOAD segments at their physical addresses; returns the PVH entry (Xen note 18). */
static uint32_t load_pvh(const unsigned char *elf, size_t length, unsigned char *ram) {
    const Elf32Header *h = (const Elf32Header *)elf;
    if (length < sizeof *h || memcmp(h->ident, "\x7f" "ELF", 4) || h->ident[4] != 1) { fprintf(stderr, "not an ELF32\n"); exit(1); }
    uint32_t entry = 0;
    for (unsigned i = 0; i < h->phnum; i++) {
        const Elf32Program *p = (const Elf32Program *)(elf + h->phoff + i * h->phentsize);
        if (p->type == 1) {
            if ((uint64_t)p->paddr + p->memsz > MEMORY_SIZE || (uint64_t)p->offset + p->filesz > length) { fprintf(stderr, "segment out of range\n"); exit(1); }
            memcpy(ram + p->paddr, elf + p->offset, p->filesz);
            memset(ram + p->paddr + p->filesz, 0, p->memsz - p->filesz);
        } else if (p->type == 4) {
            for (uint32_t o = 0; o + 12 <= p->filesz;) {
                const uint32_t *n = (const uint32_t *)(elf + p->offset + o);
                uint32_t namesz = (n[0] + 3) & ~3u, descsz = (n[1] + 3) & ~3u;
                if (n[2] == 18 && !memcmp(n + 3, "Xen", 4)) entry = *(const uint32_t *)((const unsigned char *)(n + 3) + namesz);
                o += 12 + namesz + descsz;
            }
        }
    }
    if (!entry) { fprintf(stderr, "no PVH entry note\n"); exit(1); }
    return entry;
}

static void write_start_info(unsigned char *ram, const char *cmdline) {
    strcpy((char *)ram + CMDLINE, cmdline);
    uint64_t *map = (uint64_t *)(ram + MEMMAP);      /* hvm_memmap_table_entry: addr, size, type|reserved */
    map[0] = 0; map[1] = 0x9fc00; map[2] = 1;
    map[3] = 0x100000; map[4] = MEMORY_SIZE - 0x100000; map[5] = 1;
    uint32_t *si = (uint32_t *)(ram + START_INFO);    /* hvm_start_info version 1 */
    memset(si, 0, 56);
    si[0] = 0x336ec578; si[1] = 1;
    *(uint64_t *)(si + 6) = CMDLINE;                   /* cmdline_paddr at +24 */
    *(uint64_t *)(si + 10) = MEMMAP;                   /* memmap_paddr at +40 */
    si[12] = 2;                                        /* memmap_entries at +48 */
}

static void flat(struct kvm_segment *s, uint8_t type, uint16_t selector) {
    memset(s, 0, sizeof *s);
    s->limit = 0xffffffff; s->selector = selector; s->type = type;
    s->present = 1; s->s = 1; s->db = 1; s->g = 1;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: raw-kvm MINI_ELF EXITS KEY\n"); return 2; }
    size_t length;
    unsigned char *elf = read_file(argv[1], &length);
    char cmdline[128];
    snprintf(cmdline, sizeof cmdline, "exits=%s mmio=0xd0000000", argv[2]);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    unsigned char *ram = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) die("mmap");
    struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = MEMORY_SIZE, .userspace_addr = (uint64_t)ram };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0) die("KVM_SET_TSS_ADDR");
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
    uint32_t entry = load_pvh(elf, length, ram);
    write_start_info(ram, cmdline);

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    flat(&sregs.cs, 0xb, 0x10);
    flat(&sregs.ds, 0x3, 0x18); sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.cr0 = 0x11;    /* PE | ET: PVH enters in 32-bit protected mode, paging off */
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    struct kvm_regs regs = { .rip = entry, .rbx = START_INFO, .rflags = 2 };
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    uint64_t marks[4] = {0};
    unsigned long exits = 0, mmio = 0, scratch = 0;
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) { if (errno == EINTR) continue; die("KVM_RUN"); }
        exits++;
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            unsigned char *data = (unsigned char *)run + run->io.data_offset;
            uint16_t port = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_IN) {
                uint32_t v = port == 0x3fd ? 0x20 : 0xffffffff;   /* LSR: transmitter empty */
                memcpy(data, &v, run->io.size);
            } else if (port == 0x440) {
                if (data[0] < 4) marks[data[0]] = now_ns();
            } else if (port == 0x3ff) {
                scratch++;
            } else if (port == 0x64 && data[0] == 0xfe) {
                goto done;
            }
            break;
        }
        case KVM_EXIT_MMIO:
            mmio++;
            if (!run->mmio.is_write) memset(run->mmio.data, 0xff, run->mmio.len);
            break;
        case KVM_EXIT_HLT:
            goto done;
        default:
            fprintf(stderr, "raw-kvm: unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
done:
    if (!marks[1] || !marks[2] || !marks[3]) { fprintf(stderr, "raw-kvm: guest did not write markers 1-3\n"); return 1; }
    double n = atof(argv[2]);
    double pio_rate = n / ((double)(marks[2] - marks[1]) / 1e9), mmio_rate = n / ((double)(marks[3] - marks[2]) / 1e9);
    printf("BENCH %s.pio.eps %.0f\nBENCH %s.mmio.eps %.0f\n", argv[3], pio_rate, argv[3], mmio_rate);
    printf("raw KVM loop: %.0f port-I/O exits/s, %.0f MMIO exits/s (%lu exits, %lu scratch writes, %lu MMIO)\n",
           pio_rate, mmio_rate, exits, scratch, mmio);
    return 0;
}
