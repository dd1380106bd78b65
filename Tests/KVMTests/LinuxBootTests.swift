import Foundation
import KVM
import Testing

/// Tier 2 (issue 6): Debian's vmlinux boots through PVH far enough to show that it accepted
/// our command line and memory map. Under the software-assisted KVM of the build machines
/// the kernel runs by emulation (~85 s to its first line), so this waits up to 3 minutes.
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: Host.debianKernel != nil, "needs Debian's linux-image-amd64 in /boot (apt-get install linux-image-amd64)"))
struct LinuxEarlyBootTests {
    @Test(.timeLimit(.minutes(4)))
    func debianVmlinuxAcceptsCommandLineAndE820() throws {
        let vmlinux = try Guests.debianVmlinux.get()
        let cmdline = "earlyprintk=serial console=ttyS0 acpi=off reboot=k swiftvmm-tier2"
        let vm = try BootedMachine(kernel: vmlinux, cmdline: cmdline, memory: 256 << 20)
        vm.start()
        let out = vm.waitForOutput(timeout: 180) { $0.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable") }
        vm.machine.stop(.signal(SIGTERM))
        _ = vm.wait(timeout: 30)
        #expect(out.contains("Command line: \(cmdline)"))
        #expect(out.contains("BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable"))
        #expect(out.contains("BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"))
    }
}

/// Tier 3 (issue 6): a full Linux guest with its drivers, from `Tools/build-guest`. It needs
/// hardware virtualization; the software-assisted kvm_pvm of the build machines stops a stock
/// kernel on instructions its emulator lacks (cmpxchg16b, xrstor), see shared/README.md.
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: Host.hasHardwareVirtualization, "needs hardware virtualization (vmx/svm); this host's KVM is software-assisted kvm_pvm"),
       .enabled(if: FileManager.default.fileExists(atPath: Host.repositoryRoot.appendingPathComponent("guest-out/initramfs.cpio.gz").path),
                "needs the guest from Tools/build-guest (guest-out/initramfs.cpio.gz)"))
struct FullLinuxGuestTests {
    private func boot(cpus: Int = 1, devices: [String] = [], extra: String = "") throws -> (MachineExit?, String) {
        let initrd = try Data(contentsOf: Host.repositoryRoot.appendingPathComponent("guest-out/initramfs.cpio.gz"))
        let vm = try BootedMachine(kernel: try Guests.debianVmlinux.get(),
                                   cmdline: "console=ttyS0 acpi=off reboot=k swiftvmm.run=true \(extra)",
                                   initrd: Array(initrd), memory: 512 << 20, cpus: cpus, devices: devices)
        return vm.boot(timeout: 90)
    }

    @Test(.timeLimit(.minutes(2)), arguments: [1, 2])
    func bootsToInitAndRebootsWithStatusZero(cpus: Int) throws {
        let (exit, out) = try boot(cpus: cpus)
        #expect(out.contains("swiftvmm-init: ready"))
        #expect(out.contains("swiftvmm-init: command exited with 0"))
        #expect(exit == .reset)
    }

    @Test(.timeLimit(.minutes(2)), arguments: [("e1000", "e1000"), ("virtio-net", "virtio_net")])
    func driverBindsWithTheConfiguredMAC(device: String, driver: String) throws {
        let (exit, out) = try boot(devices: ["\(device),net=user,mac=52:54:00:12:34:99"], extra: "swiftvmm.net=dhcp")
        #expect(out.contains("52:54:00:12:34:99 driver \(driver)"))
        #expect(exit == .reset)
    }
}
