#ifndef CKVM_KVM_H
#define CKVM_KVM_H
// KVM request numbers as constants Swift can import (the _IO* macros cannot be), and
// accessors for the parts of `struct kvm_run` / flexible-array structs Swift handles badly.
#include <linux/kvm.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h> // the VM's stop signals (SIGINT/SIGTERM) arrive on its event loop

// System ioctls (on /dev/kvm)
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// VM ioctls
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;

// vCPU ioctls
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;

static const int CKVM_API_VERSION = KVM_API_VERSION;

// MARK: kvm_run exit data (anonymous union members)

/// KVM_EXIT_IO: direction (0 in, 1 out), access size, port, repeat count, data offset in the run page.
static inline void ckvm_exit_io(const struct kvm_run *run, uint8_t *direction, uint8_t *size,
                                uint16_t *port, uint32_t *count, uint64_t *data_offset) {
    *direction = run->io.direction; *size = run->io.size; *port = run->io.port;
    *count = run->io.count; *data_offset = run->io.data_offset;
}
/// KVM_EXIT_MMIO: guest-physical address, length (<= 8), write flag; `data` via ckvm_exit_mmio_data.
static inline void ckvm_exit_mmio(const struct kvm_run *run, uint64_t *addr, uint32_t *len, uint8_t *is_write) {
    *addr = run->mmio.phys_addr; *len = run->mmio.len; *is_write = run->mmio.is_write;
}
static inline uint8_t *ckvm_exit_mmio_data(struct kvm_run *run) { return run->mmio.data; }
static inline uint32_t ckvm_exit_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline uint32_t ckvm_exit_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline uint64_t ckvm_exit_internal_data(const struct kvm_run *run, uint32_t i) {
    return i < 16 ? run->internal.data[i] : 0;
}
static inline uint32_t ckvm_exit_system_event_type(const struct kvm_run *run) { return run->system_event.type; }
static inline uint64_t ckvm_exit_fail_entry_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }

// MARK: flexible-array structures

static inline struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t n) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = n;
    return c;
}
static inline struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *c) { return c->entries; }

static inline struct kvm_msrs *ckvm_msrs_alloc(uint32_t n) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + (size_t)n * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = n;
    return m;
}
static inline struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *m) { return m->entries; }

static inline struct kvm_irq_routing *ckvm_irq_routing_alloc(uint32_t n) {
    struct kvm_irq_routing *r = calloc(1, sizeof(*r) + (size_t)n * sizeof(struct kvm_irq_routing_entry));
    if (r) r->nr = n;
    return r;
}
/// Sets route `i` to an IOAPIC/PIC pin (irqchip 0 = PIC master, 1 = PIC slave, 2 = IOAPIC).
static inline void ckvm_irq_routing_set_irqchip(struct kvm_irq_routing *r, uint32_t i, uint32_t gsi, uint32_t chip, uint32_t pin) {
    if (i >= r->nr) return;
    struct kvm_irq_routing_entry *e = &r->entries[i];
    memset(e, 0, sizeof(*e));
    e->gsi = gsi; e->type = KVM_IRQ_ROUTING_IRQCHIP; e->u.irqchip.irqchip = chip; e->u.irqchip.pin = pin;
}
/// Sets route `i` to an MSI message.
static inline void ckvm_irq_routing_set_msi(struct kvm_irq_routing *r, uint32_t i, uint32_t gsi, uint64_t address, uint32_t data) {
    if (i >= r->nr) return;
    struct kvm_irq_routing_entry *e = &r->entries[i];
    memset(e, 0, sizeof(*e));
    e->gsi = gsi; e->type = KVM_IRQ_ROUTING_MSI;
    e->u.msi.address_lo = (uint32_t)address; e->u.msi.address_hi = (uint32_t)(address >> 32); e->u.msi.data = data;
}

#endif
