#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux
import Logging
import VMMCore

/// The CPU state a boot loader hands over (see the PVH and Linux x86 boot protocols).
public struct BootCPUState: Sendable, Equatable {
    public enum Mode: Sendable, Equatable {
        /// 32-bit protected mode, paging off, flat segments (PVH entry).
        case protected32
        /// 64-bit long mode on identity-mapped page tables at `pageTableRoot` (bzImage 64-bit entry).
        case long64(pageTableRoot: UInt64)
    }
    public var mode: Mode
    public var entry: UInt64
    public var rbx: UInt64 = 0
    public var rsi: UInt64 = 0
    /// The GDT the loader wrote (selectors 0x10 code, 0x18 data, 0x20 TSS).
    public var gdtBase: UInt64
    public var gdtLimit: UInt16

    public init(mode: Mode, entry: UInt64, rbx: UInt64 = 0, rsi: UInt64 = 0, gdtBase: UInt64, gdtLimit: UInt16) {
        self.mode = mode; self.entry = entry; self.rbx = rbx; self.rsi = rsi
        self.gdtBase = gdtBase; self.gdtLimit = gdtLimit
    }
}

/// One virtual CPU: its fd, the shared `kvm_run` page, and the exit loop on its own thread.
final class VCPU: @unchecked Sendable {
    let index: Int
    let fd: Int32
    private let run: UnsafeMutablePointer<kvm_run>
    private let runSize: Int
    private let pio: AddressSpace
    private let mmio: AddressSpace
    private let latch: StopLatch
    private let logger: Logger
    private var thread: pthread_t?

    private let gate: PauseGate

    init(vm: KVMVirtualMachine, index: Int, pio: AddressSpace, mmio: AddressSpace, latch: StopLatch, gate: PauseGate,
         logger: Logger) throws(KVMError) {
        self.gate = gate
        let size = try vm.system.vcpuMmapSize()
        guard size >= MemoryLayout<kvm_run>.size else { throw .badValue("KVM_GET_VCPU_MMAP_SIZE returned \(size)") }
        let vcpu = ckvm_ioctl_int(vm.fd, CKVM_CREATE_VCPU, UInt(index))
        guard vcpu >= 0 else { throw .ioctl("KVM_CREATE_VCPU", errno: errno) }
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0), p != MAP_FAILED else {
            let e = errno
            close(vcpu)
            throw .mmap("the kvm_run area of vCPU \(index)", errno: e)
        }
        self.index = index; fd = vcpu; runSize = size
        run = p.assumingMemoryBound(to: kvm_run.self)
        self.pio = pio; self.mmio = mmio; self.latch = latch; self.logger = logger
    }

    deinit {
        munmap(run, runSize)
        close(fd)
    }

    // MARK: Set-up

    /// CPUID (with this vCPU's APIC id), MSRs, FPU and LAPIC virtual-wire set-up.
    func configure(cpuid: [kvm_cpuid_entry2], cpuCount: Int) throws(KVMError) {
        try setCPUID(CPUIDTable.adjusted(cpuid, apicID: UInt32(index), cpuCount: UInt32(cpuCount)))
        try setBootMSRs()
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F // x87 power-on control word (SDM vol. 1 §8.1.5)
        fpu.mxcsr = 0x1F80 // SSE power-on MXCSR (SDM vol. 1 §10.2.3.1)
        _ = try kvmIoctl(fd, CKVM_SET_FPU, "KVM_SET_FPU", &fpu)
        try setVirtualWire()
    }

    private func setCPUID(_ entries: [kvm_cpuid_entry2]) throws(KVMError) {
        guard let buf = ckvm_cpuid2_alloc(UInt32(entries.count)) else { throw .ioctl("KVM_SET_CPUID2", errno: ENOMEM) }
        defer { free(buf) }
        let dst = ckvm_cpuid2_entries(buf)
        for (i, e) in entries.enumerated() { dst?[i] = e }
        _ = try kvmIoctl(fd, CKVM_SET_CPUID2, "KVM_SET_CPUID2", buf)
    }

    /// The MSR values a BIOS leaves (as Firecracker sets them): SYSENTER/SYSCALL cleared,
    /// fast strings on, MTRRs enabled with write-back default so the guest's RAM is cacheable.
    private func setBootMSRs() throws(KVMError) {
        let msrs: [(UInt32, UInt64)] = [
            (0x174, 0), (0x175, 0), (0x176, 0), // IA32_SYSENTER_CS/ESP/EIP
            (0xC000_0081, 0), (0xC000_0082, 0), (0xC000_0083, 0), (0xC000_0084, 0), // STAR, LSTAR, CSTAR, SFMASK
            (0xC000_0102, 0), // KERNEL_GS_BASE
            (0x10, 0), // TSC
            (0x1A0, 1), // IA32_MISC_ENABLE: fast strings
            (0x2FF, (1 << 11) | 6), // IA32_MTRR_DEF_TYPE: enabled, write-back
        ]
        guard let buf = ckvm_msrs_alloc(UInt32(msrs.count)) else { throw .ioctl("KVM_SET_MSRS", errno: ENOMEM) }
        defer { free(buf) }
        let entries = ckvm_msrs_entries(buf)
        for (i, m) in msrs.enumerated() { entries?[i] = kvm_msr_entry(index: m.0, reserved: 0, data: m.1) }
        let set = try kvmIoctl(fd, CKVM_SET_MSRS, "KVM_SET_MSRS", buf)
        if set != msrs.count { logger.debug("KVM_SET_MSRS set \(set) of \(msrs.count) boot MSRs") }
    }

    /// LINT0 as ExtINT and LINT1 as NMI: the virtual-wire mode the MP spec (§3.6.2.2)
    /// expects at boot, so the 8259 reaches the BSP until the guest switches to the IOAPIC.
    private func setVirtualWire() throws(KVMError) {
        var lapic = kvm_lapic_state()
        _ = try kvmIoctl(fd, CKVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic)
        withUnsafeMutableBytes(of: &lapic.regs) { regs in
            func setMode(_ offset: Int, _ mode: UInt32) {
                let v = regs.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                regs.storeBytes(of: (v & ~0x700) | (mode << 8), toByteOffset: offset, as: UInt32.self)
            }
            setMode(0x350, 7) // LVT LINT0: ExtINT
            setMode(0x360, 4) // LVT LINT1: NMI
        }
        _ = try kvmIoctl(fd, CKVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic)
    }

    /// Puts the boot CPU at the loader's entry point in the mode its protocol requires.
    func setBootState(_ boot: BootCPUState) throws(KVMError) {
        var sregs = kvm_sregs()
        _ = try kvmIoctl(fd, CKVM_GET_SREGS, "KVM_GET_SREGS", &sregs)
        let long: Bool
        if case .long64 = boot.mode { long = true } else { long = false }
        let code = kvm_segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xB, present: 1, dpl: 0,
                               db: long ? 0 : 1, s: 1, l: long ? 1 : 0, g: 1, avl: 0, unusable: 0, padding: 0)
        let data = kvm_segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x18, type: 0x3, present: 1, dpl: 0,
                               db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0, padding: 0)
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = kvm_segment(base: 0, limit: 0x67, selector: 0x20, type: 0xB, present: 1, dpl: 0,
                               db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0, padding: 0)
        sregs.gdt.base = boot.gdtBase
        sregs.gdt.limit = boot.gdtLimit
        switch boot.mode {
        case .protected32:
            sregs.cr0 = 0x11 // PE | ET, paging off (PVH ABI)
            sregs.cr4 = 0
            sregs.efer = 0
        case let .long64(root):
            sregs.cr3 = root
            sregs.cr0 = 0x8000_0011 // PG | ET | PE
            sregs.cr4 = 0x20 // PAE
            sregs.efer = 0x500 // LME | LMA
        }
        _ = try kvmIoctl(fd, CKVM_SET_SREGS, "KVM_SET_SREGS", &sregs)
        var regs = kvm_regs()
        regs.rflags = 2 // bit 1 is reserved-one; IF and TF clear
        regs.rip = boot.entry
        regs.rbx = boot.rbx
        regs.rsi = boot.rsi
        _ = try kvmIoctl(fd, CKVM_SET_REGS, "KVM_SET_REGS", &regs)
    }

    // MARK: Running

    func start() {
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let vcpu = Unmanaged<VCPU>.fromOpaque(arg).takeRetainedValue()
            ThreadConfinement.enter(.vcpu) // before the first KVM_RUN
            vcpu.runLoop()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            latch.stop(.vcpuFailure(cpu: index, detail: "cannot start the vCPU thread: \(String(cString: strerror(rc)))", registers: ""))
            return
        }
        thread = tid
    }

    /// Makes a running KVM_RUN return (immediate_exit + a signal that interrupts the ioctl).
    func kick() {
        run.pointee.immediate_exit = 1
        if let t = thread { pthread_kill(t, VCPUSignal.kick) }
    }

    func join() {
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }

    private func runLoop() {
        VCPUSignal.unblockKick()
        while !latch.isStopped {
            gate.pass()
            if latch.isStopped { break }
            if ckvm_ioctl_int(fd, CKVM_RUN, 0) < 0 {
                let e = errno
                if e == EINTR || e == EAGAIN {
                    run.pointee.immediate_exit = 0
                    continue
                }
                latch.stop(.vcpuFailure(cpu: index, detail: "KVM_RUN failed: \(String(cString: strerror(e)))", registers: registerDump()))
                return
            }
            if let exit = handleExit() {
                latch.stop(exit)
                return
            }
        }
    }

    /// Handles one exit; returns why the machine must stop, or nil to continue.
    private func handleExit() -> MachineExit? {
        switch Int32(run.pointee.exit_reason) {
        case KVM_EXIT_IO: handleIO()
        case KVM_EXIT_MMIO: handleMMIO()
        case KVM_EXIT_HLT: .halted(cpu: index)
        case KVM_EXIT_SHUTDOWN: .tripleFault(cpu: index, registers: registerDump())
        case KVM_EXIT_INTR: nil
        case KVM_EXIT_SYSTEM_EVENT:
            switch Int32(ckvm_exit_system_event_type(run)) {
            case KVM_SYSTEM_EVENT_RESET: .reset
            case KVM_SYSTEM_EVENT_SHUTDOWN: .powerOff
            case let t: .vcpuFailure(cpu: index, detail: "unexpected system event \(t)", registers: registerDump())
            }
        case KVM_EXIT_INTERNAL_ERROR:
            .vcpuFailure(cpu: index, detail: internalErrorDetail(), registers: registerDump())
        case KVM_EXIT_FAIL_ENTRY:
            .vcpuFailure(cpu: index, detail: "VM entry failed, hardware reason 0x\(String(ckvm_exit_fail_entry_reason(run), radix: 16))",
                         registers: registerDump())
        case let r:
            .vcpuFailure(cpu: index, detail: "unexpected KVM exit reason \(r)", registers: registerDump())
        }
    }

    private func internalErrorDetail() -> String {
        let sub = ckvm_exit_internal_suberror(run)
        let kind = sub == 1 ? " (emulation failure)" : ""
        let n = min(ckvm_exit_internal_ndata(run), 16)
        let data = (0 ..< n).map { "0x" + String(ckvm_exit_internal_data(run, $0), radix: 16) }.joined(separator: " ")
        return "KVM internal error, suberror \(sub)\(kind)" + (data.isEmpty ? "" : ", data: \(data)")
    }

    /// KVM_EXIT_IO: `count` accesses of `size` bytes, data in the run page at `data_offset`.
    private func handleIO() -> MachineExit? {
        var direction: UInt8 = 0, size: UInt8 = 0, port: UInt16 = 0, count: UInt32 = 0, offset: UInt64 = 0
        ckvm_exit_io(run, &direction, &size, &port, &count, &offset)
        let width = Int(size)
        let (total, o1) = UInt64(count).multipliedReportingOverflow(by: UInt64(width))
        let (end, o2) = offset.addingReportingOverflow(total)
        guard [1, 2, 4].contains(width), !o1, !o2, end <= UInt64(runSize) else {
            return .vcpuFailure(cpu: index, detail: "malformed I/O exit (port 0x\(String(port, radix: 16)), size \(size), count \(count))",
                                registers: registerDump())
        }
        let base = UnsafeMutableRawPointer(run) + Int(offset)
        for i in 0 ..< Int(count) {
            let p = base + i * width
            if direction == UInt8(KVM_EXIT_IO_OUT) {
                pio.write(UInt64(port), size: width, value: Self.loadLE(p, width))
            } else {
                Self.storeLE(pio.read(UInt64(port), size: width), p, width)
            }
        }
        return nil
    }

    /// KVM_EXIT_MMIO: one access of up to 8 bytes.
    private func handleMMIO() -> MachineExit? {
        var address: UInt64 = 0, length: UInt32 = 0, isWrite: UInt8 = 0
        ckvm_exit_mmio(run, &address, &length, &isWrite)
        guard let data = ckvm_exit_mmio_data(run), (1 ... 8).contains(length) else {
            return .vcpuFailure(cpu: index, detail: "malformed MMIO exit (address 0x\(String(address, radix: 16)), length \(length))",
                                registers: registerDump())
        }
        let width = Int(length)
        if isWrite != 0 {
            mmio.write(address, size: width, value: Self.loadLE(UnsafeMutableRawPointer(data), width))
        } else {
            Self.storeLE(mmio.read(address, size: width), UnsafeMutableRawPointer(data), width)
        }
        return nil
    }

    private static func loadLE(_ p: UnsafeMutableRawPointer, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0 ..< width { v |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt64(i)) }
        return v
    }

    private static func storeLE(_ value: UInt64, _ p: UnsafeMutableRawPointer, _ width: Int) {
        for i in 0 ..< width { p.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: i, as: UInt8.self) }
    }

    // MARK: Diagnostics

    /// General, control and segment registers, for triple faults and internal errors.
    func registerDump() -> String {
        var regs = kvm_regs()
        var sregs = kvm_sregs()
        guard ckvm_ioctl(fd, CKVM_GET_REGS, &regs) == 0, ckvm_ioctl(fd, CKVM_GET_SREGS, &sregs) == 0 else {
            return "  (registers unavailable: \(String(cString: strerror(errno))))"
        }
        func h(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 16 - s.count)) + s
        }
        func seg(_ name: String, _ s: kvm_segment) -> String {
            "\(name)=\(String(s.selector, radix: 16)) base=\(h(s.base)) limit=\(String(s.limit, radix: 16)) type=\(s.type) l=\(s.l) db=\(s.db)"
        }
        return [
            "  rip=\(h(regs.rip)) rsp=\(h(regs.rsp)) rflags=\(h(regs.rflags))",
            "  rax=\(h(regs.rax)) rbx=\(h(regs.rbx)) rcx=\(h(regs.rcx)) rdx=\(h(regs.rdx))",
            "  rsi=\(h(regs.rsi)) rdi=\(h(regs.rdi)) rbp=\(h(regs.rbp)) r8=\(h(regs.r8))",
            "  r9=\(h(regs.r9)) r10=\(h(regs.r10)) r11=\(h(regs.r11)) r12=\(h(regs.r12))",
            "  r13=\(h(regs.r13)) r14=\(h(regs.r14)) r15=\(h(regs.r15))",
            "  cr0=\(h(sregs.cr0)) cr2=\(h(sregs.cr2)) cr3=\(h(sregs.cr3)) cr4=\(h(sregs.cr4)) efer=\(h(sregs.efer))",
            "  " + seg("cs", sregs.cs) + "  " + seg("ss", sregs.ss),
            "  gdt=\(h(sregs.gdt.base))/\(String(sregs.gdt.limit, radix: 16)) idt=\(h(sregs.idt.base))/\(String(sregs.idt.limit, radix: 16))",
        ].joined(separator: "\n")
    }
}

/// The signal that interrupts KVM_RUN so a vCPU thread notices a stop request.
enum VCPUSignal {
    static let kick = SIGUSR1

    /// Installs a no-op handler (without SA_RESTART, so KVM_RUN returns EINTR).
    static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(kick, &action, nil)
    }

    static func unblockKick() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, kick)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
