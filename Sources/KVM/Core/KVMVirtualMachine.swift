#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux
import VMMCore

/// One KVM virtual machine: its memory slots, the in-kernel irqchip (PIC + IOAPIC +
/// LAPICs) and PIT, and the VM-wide ioctls (interrupt lines, MSIs, irqfd, ioeventfd).
public final class KVMVirtualMachine: @unchecked Sendable {
    public let system: KVMSystem
    public let fd: Int32
    private var nextSlot: UInt32 = 0

    /// Where the VMX real-mode helpers live: three pages for the TSS and one for the
    /// identity-map page table, just below the BIOS area at the top of 4 GiB, which no
    /// RAM, BAR or APIC uses in this machine (see Docs/platform.md).
    public static let tssAddress: UInt = 0xFFFB_D000
    public static let identityMapAddress: UInt64 = 0xFFFB_C000

    public init(system: KVMSystem) throws(KVMError) {
        self.system = system
        let vm = ckvm_ioctl_int(system.fd, CKVM_CREATE_VM, 0)
        guard vm >= 0 else { throw .ioctl("KVM_CREATE_VM", errno: errno) }
        fd = vm
        do {
            _ = try kvmIoctl(fd, CKVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: Self.tssAddress)
            var identity = Self.identityMapAddress
            _ = try kvmIoctl(fd, CKVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &identity)
            _ = try kvmIoctl(fd, CKVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", value: 0)
            // KVM_PIT_SPEAKER_DUMMY: the PIT also answers port 0x61, which Linux reads while calibrating.
            var pit = kvm_pit_config(flags: UInt32(KVM_PIT_SPEAKER_DUMMY), pad: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
            _ = try kvmIoctl(fd, CKVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Registers every RAM region of `memory` as a KVM memory slot.
    public func map(_ memory: GuestMemory) throws(KVMError) {
        for region in memory.regions {
            var slot = kvm_userspace_memory_region(slot: nextSlot, flags: 0, guest_phys_addr: region.base.raw,
                                                   memory_size: region.size,
                                                   userspace_addr: UInt64(UInt(bitPattern: region.host)))
            _ = try kvmIoctl(fd, CKVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &slot)
            nextSlot += 1
        }
    }

    /// Drives GSI `gsi` (KVM_IRQ_LINE).
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        _ = try kvmIoctl(fd, CKVM_IRQ_LINE, "KVM_IRQ_LINE", &line)
    }

    /// Delivers one MSI (KVM_SIGNAL_MSI).
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        _ = try kvmIoctl(fd, CKVM_SIGNAL_MSI, "KVM_SIGNAL_MSI", &msi)
    }

    /// Assigns (or with `deassign`, removes) an ioeventfd: guest writes to `address` signal `eventFD`.
    public func ioeventfd(eventFD: Int32, space: AddressSpaceKind, address: UInt64, size: Int, value: UInt64?,
                          deassign: Bool = false) throws(KVMError) {
        var e = kvm_ioeventfd()
        e.addr = address
        e.len = UInt32(size)
        e.fd = eventFD
        if let value {
            e.datamatch = value
            e.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_datamatch)
        }
        if space == .io { e.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_pio) }
        if deassign { e.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_deassign) }
        _ = try kvmIoctl(fd, CKVM_IOEVENTFD, "KVM_IOEVENTFD", &e)
    }
}
