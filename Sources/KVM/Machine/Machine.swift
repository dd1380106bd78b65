#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux
import Logging
import VMMCore

/// A PC-like VM on KVM, without firmware: RAM, in-kernel irqchip and PIT, PCI bus 0 with
/// the requested devices (BARs assigned as a BIOS would), COM1, the i8042 reset line,
/// RTC/CMOS, the boot-marker port, an MP table, and the kernel loaded and ready to run.
/// The process is the VM: `run()` returns when the guest resets, powers off, faults, or a
/// stop signal arrives, with every device shut down.
public final class Machine: @unchecked Sendable {
    public static let maximumCPUs = 64

    public let memory: GuestMemory
    public let vm: KVMVirtualMachine
    public let loop: EPollEventLoop
    public let pio: AddressSpace
    public let mmio: AddressSpace
    public let bus: PCIBus
    public let serial: Serial16550
    public let cmos: CMOS
    public let bootMarker: BootMarker
    private let console: SerialConsole
    private let latch = StopLatch()
    private let gate = PauseGate()
    private let vcpus: [VCPU]
    private let logger: Logger
    private let attachment: SerialAttachment
    private var signalFD: Int32 = -1

    /// Builds the machine. On any error everything created so far is released (devices
    /// shut down, backends closed) before the error is thrown.
    public init(configuration c: MachineConfiguration, registry: PCIDeviceRegistry, services: ServiceRegistry,
                logger: Logger = Logger(label: "swiftvmm.machine")) throws(MachineError) {
        self.logger = logger
        attachment = c.serial
        guard (PlatformLayout.minimumMemory ... PlatformLayout.maximumMemory).contains(c.memorySize) else {
            throw .memorySize(c.memorySize)
        }
        guard (1 ... Self.maximumCPUs).contains(c.cpus) else { throw .cpuCount(c.cpus) }
        console = try SerialConsole(attachment: c.serial, start: c.startTime, logger: logger)

        do {
            memory = try GuestMemory(pcRAMSize: c.memorySize)
        } catch {
            throw .platform("--memory: \(error)")
        }
        do {
            let system = try KVMSystem()
            vm = try KVMVirtualMachine(system: system)
            try vm.map(memory)
        } catch {
            throw .kvm(error)
        }
        do {
            loop = try EPollEventLoop()
        } catch {
            throw .platform("event loop: \(error)")
        }
        pio = AddressSpace(kind: .io, logger: Logger(label: "swiftvmm.pio"))
        mmio = AddressSpace(kind: .memory, logger: Logger(label: "swiftvmm.mmio"))
        let interrupts = KVMInterruptController(vm: vm, logger: logger)
        do {
            bus = try PCIBus(memory: memory, pio: pio, mmio: mmio, interrupts: interrupts, clock: loop, eventLoop: loop,
                             services: services)
        } catch {
            throw .platform("PCI bus: \(error)")
        }
        bus.doorbellAccelerator = KVMDoorbells(vm: vm, loop: loop, logger: logger)

        let latch = self.latch
        let console = self.console
        serial = Serial16550(output: { console.emit($0) },
                             setLine: { interrupts.setIRQ(Serial16550.com1IRQ, level: $0) })
        cmos = CMOS(clock: loop, setLine: { interrupts.setIRQ(CMOS.irq, level: $0) })
        bootMarker = BootMarker(start: c.startTime, logger: logger)
        let bus = self.bus
        do throws(MachineError) {
            for request in c.devices {
                do {
                    try bus.add(spec: request.spec, registry: registry, slot: request.slot, function: request.function)
                } catch {
                    throw MachineError.device(spec: request.text, underlying: "\(error)")
                }
            }
            do { try bus.assignResources() } catch { throw MachineError.platform("\(error)") }
            try Self.mapPlatformDevices(pio: pio, serial: serial, cmos: cmos, bootMarker: bootMarker,
                                        i8042: I8042(onReset: { latch.stop(.reset) }))
            bus.resetRequest = { latch.stop(.reset) }   // 0xCF9, Linux's reboot=pci
            let boot: BootCPUState
            do {
                boot = try c.kernel.load(into: memory, initrd: c.initrd, cmdline: c.cmdline)
            } catch {
                throw MachineError.boot(error)
            }
            let pciInterrupts = bus.functions.compactMap { fn -> MPTable.PCIInterrupt? in
                guard let line = fn.interrupts.intxLine, fn.config.interruptPin != 0 else { return nil }
                return MPTable.PCIInterrupt(slot: fn.slot, pin: Int(fn.config.interruptPin), ioapicPin: line)
            }
            do {
                try MPTable(cpus: c.cpus, pciInterrupts: pciInterrupts).write(to: memory)
            } catch {
                throw MachineError.platform("cannot write the MP table: \(error)")
            }
            var made: [VCPU] = []
            do {
                let cpuid = try vm.system.supportedCPUID()
                for i in 0 ..< c.cpus {
                    let vcpu = try VCPU(vm: vm, index: i, pio: pio, mmio: mmio, latch: latch, gate: gate,
                                        logger: logger)
                    try vcpu.configure(cpuid: cpuid, cpuCount: c.cpus)
                    made.append(vcpu)
                }
                // Application processors wait for INIT/SIPI from the BSP (in-kernel LAPIC).
                try made.first?.setBootState(boot)
            } catch {
                throw MachineError.kvm(error)
            }
            vcpus = made
            logger.info("loaded \(c.kernel.formatName) kernel \(c.kernel.path), entry 0x\(String(boot.entry, radix: 16))")
        } catch {
            bus.shutdown()
            throw error
        }
    }

    private static func mapPlatformDevices(pio: AddressSpace, serial: Serial16550, cmos: CMOS, bootMarker: BootMarker,
                                           i8042: I8042) throws(MachineError) {
        do {
            try pio.map(Serial16550.com1Port ..< Serial16550.com1Port + 8, owner: "com1", handler: serial)
            try pio.map(I8042.dataPort ..< I8042.dataPort + 1, owner: "i8042-data", handler: i8042.handler(for: I8042.dataPort))
            try pio.map(I8042.commandPort ..< I8042.commandPort + 1, owner: "i8042-command",
                        handler: i8042.handler(for: I8042.commandPort))
            try pio.map(CMOS.ports, owner: "cmos", handler: cmos)
            try pio.map(BootMarker.port ..< BootMarker.port + 1, owner: "boot-marker", handler: bootMarker)
        } catch {
            throw .platform("platform devices: \(error)")
        }
    }

    // MARK: Running

    /// Blocks SIGINT and SIGTERM in the calling thread and every thread it creates later, so
    /// they arrive through the machine's signalfd and stop it cleanly. Call first thing in main.
    public static func blockStopSignals() {
        var set = stopSignalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    private static func stopSignalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        return set
    }

    /// Runs the VM until it stops; then stops every vCPU and the I/O loop and shuts devices down.
    public func run() -> MachineExit {
        VCPUSignal.install()
        watchStopSignals()
        if attachment == .stdio {
            let latch = self.latch
            console.attachInput(to: serial, loop: loop, onQuit: { latch.stop(.consoleQuit) })
        }
        console.attachOutput(to: loop)
        loop.startThread(name: "io-loop")
        for v in vcpus { v.start() }
        // Set up: from here the calling thread only waits and tears down.
        ThreadConfinement.enter(.main)
        let reason = latch.wait()
        gate.release()
        for v in vcpus { v.kick() }
        for v in vcpus { v.join() }
        loop.stop()
        console.detachInput()
        console.finishOutput()
        cmos.shutdown()
        bus.shutdown()
        if signalFD >= 0 { close(signalFD) }
        return reason
    }

    /// Stops the machine from another thread (tests, embedding).
    public func stop(_ reason: MachineExit) { latch.stop(reason) }

    public var cpuCount: Int { vcpus.count }
    public var isPaused: Bool { gate.isPaused }

    /// Stops every vCPU outside KVM_RUN until `resume()` (QMP `stop`). Devices, backends
    /// and timers keep running, as under QEMU.
    public func pause() {
        let vcpus = self.vcpus
        gate.pause(vcpus: vcpus.count) { for v in vcpus { v.kick() } }
    }

    public func resume() { gate.resume() }

    private func watchStopSignals() {
        var set = Self.stopSignalSet()
        let fd = signalfd(-1, &set, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        guard fd >= 0 else { return }
        signalFD = fd
        let latch = self.latch
        _ = try? loop.register(fd: fd, events: .readable) { _ in
            var info = signalfd_siginfo()
            if read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                latch.stop(.signal(Int32(bitPattern: info.ssi_signo)))
            }
        }
    }
}
