import DeviceCatalog
import Foundation
import KVM
import Testing
import VMMCore

/// Tier 1 (issue 6): the mini guest boots on real /dev/kvm through the PVH path and reports
/// over COM1 what the VMM gave it, then resets through the i8042 so the machine exits cleanly.
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: Host.hasGCC32, "needs gcc that can compile -m32 (apt-get install gcc)"))
struct MiniGuestTests {
    private func kernel() throws -> String { try Guests.mini.get() }

    @Test func bootsReportsAndResets() throws {
        let vm = try BootedMachine(kernel: kernel(), cmdline: "console=ttyS0 mini-test", memory: 64 << 20)
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        #expect(out.contains("swiftvmm mini guest"))
        #expect(out.contains("cmdline: console=ttyS0 mini-test"))
        #expect(out.contains("memmap: 000000000000-0000000a0000 ram"))
        #expect(out.contains("memmap: 0000000f0000-000000100000 reserved"))
        #expect(out.contains("memmap: 000000100000-000004000000 ram"))
        #expect(out.contains("pci 00:00.0 8086:1237 class 060000"))
        #expect(out.contains("mini: done, resetting"))
    }

    @Test func initrdArrivesAsModule() throws {
        let initrd = [UInt8](repeating: 0xA5, count: 12345)
        let vm = try BootedMachine(kernel: kernel(), cmdline: "x", initrd: initrd, memory: 32 << 20)
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        // Placed page-aligned at the top of RAM: 32 MiB - 12345 bytes, rounded down to 4 KiB.
        #expect(out.contains("initrd: 12345 bytes at 0x01ffc000"))
        let placed = try vm.machine.memory.readBytes(at: GuestAddress(0x01FF_C000), count: initrd.count)
        #expect(placed == initrd)
    }

    @Test func memoryAbove4GiBIsReported() throws {
        let vm = try BootedMachine(kernel: kernel(), cmdline: "x", memory: 3 << 30 + 64 << 20)
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        #expect(out.contains("memmap: 000000100000-0000c0000000 ram"))
        #expect(out.contains("memmap: 000100000000-000104000000 ram"))
    }

    @Test func exitBenchmarkModeRecordsBootMarkers() throws {
        let vm = try BootedMachine(kernel: kernel(), cmdline: "exits=50", memory: 32 << 20)
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        #expect(out.contains("exits: 50 pio + 50 mmio writes + 50 mmio reads at 0xd0000000"))
        let marks = vm.machine.bootMarker.recorded
        #expect(marks.map(\.value) == [1, 2, 3, 4])
        #expect(marks.map(\.nanoseconds) == marks.map(\.nanoseconds).sorted())
    }

    @Test func twoVCPUsBoot() throws {
        let vm = try BootedMachine(kernel: kernel(), cmdline: "x", memory: 32 << 20, cpus: 2)
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        #expect(out.contains("mini: done"))
    }

    @Test(.enabled(if: DeviceCatalog.registry.types.contains { $0.typeName == "e1000" }, "needs e1000 in DeviceCatalog"))
    func pciDevicesAreEnumeratedWithAssignedResources() throws {
        let vm = try BootedMachine(kernel: kernel(), cmdline: "x", memory: 32 << 20, devices: ["e1000"])
        let (exit, out) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        let line = out.split(separator: "\n").first { $0.contains("8086:100e") }.map(String.init) ?? ""
        #expect(line.contains("class 020000"))
        #expect(line.contains(" int A line "))
        #expect(line.contains(" bar0=mem:c"))
        #expect(out.contains("pci: 2 functions"))
    }
}

/// The mini guest drives the NICs through the whole KVM path: BARs and config cycles via
/// exits, DMA into guest RAM, e1000 INTx through the in-kernel IOAPIC, virtio-net MSI-X,
/// virtio doorbells via ioeventfd, and frames through a real backend (libslirp answers ARP).
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: Host.hasGCC32, "needs gcc that can compile -m32 (apt-get install gcc)"),
       .enabled(if: Set(DeviceCatalog.registry.types.map { $0.typeName }).isSuperset(of: ["e1000", "virtio-net"]),
                "needs e1000 and virtio-net in DeviceCatalog"))
struct MiniGuestNetworkTests {
    @Test func e1000SendsAndReceivesThroughSlirpWithINTx() throws {
        let vm = try BootedMachine(kernel: try Guests.mini.get(), cmdline: "nettest=1", memory: 32 << 20,
                                   devices: ["e1000,net=user,mac=52:54:00:aa:bb:01"])
        let (exit, out) = vm.boot(timeout: 60)
        #expect(exit == .reset)
        #expect(out.contains("e1000: mac 52:54:00:aa:bb:01 link up"))
        #expect(out.contains("e1000: sent ARP request"))
        #expect(out.contains("e1000: received ARP reply from 10.0.2.2 at 52:55:0a:00:02:02"))
        #expect(!out.contains("e1000: 0 interrupts"))
        #expect(out.contains("nettest: 1 devices, ok"))
    }

    @Test func virtioNetSendsAndReceivesThroughSlirpWithMSIX() throws {
        let vm = try BootedMachine(kernel: try Guests.mini.get(), cmdline: "nettest=1", memory: 32 << 20,
                                   devices: ["virtio-net,net=user,mac=52:54:00:aa:bb:02"])
        let (exit, out) = vm.boot(timeout: 60)
        #expect(exit == .reset)
        #expect(out.contains("virtio-net: mac 52:54:00:aa:bb:02"))
        #expect(out.contains("virtio-net: received ARP reply from 10.0.2.2 at 52:55:0a:00:02:02"))
        #expect(out.contains("nettest: 1 devices, ok"))
    }

    /// Memory decoding off and on 200 times first: each time the bus takes the
    /// virtio-net's doorbells off KVM's I/O bus and puts them back (the same eventfds,
    /// `KVMDoorbell.move`), and the notifies after that still reach the device.
    @Test func virtioNetWorksAfter200DecodingToggles() throws {
        let vm = try BootedMachine(kernel: try Guests.mini.get(), cmdline: "nettest=1 toggles=200", memory: 32 << 20,
                                   devices: ["virtio-net,net=user"])
        let (exit, out) = vm.boot(timeout: 60)
        #expect(exit == .reset)
        #expect(out.contains("memory decoding toggled 200 times"))
        #expect(out.contains("nettest: 1 devices, ok"))
    }

    @Test func bothNICsInOneMachine() throws {
        let vm = try BootedMachine(kernel: try Guests.mini.get(), cmdline: "nettest=1", memory: 32 << 20,
                                   devices: ["virtio-net,net=user", "e1000,net=user"])
        let (exit, out) = vm.boot(timeout: 60)
        #expect(exit == .reset)
        #expect(out.contains("nettest: 2 devices, ok"))
    }
}

/// virtio-blk on KVM with the real file backend: the mini guest writes a pattern to
/// sector 1, reads it back, flushes and reads the serial; the file holds the pattern.
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"),
       .enabled(if: Host.hasGCC32, "needs gcc that can compile -m32 (apt-get install gcc)"))
struct MiniGuestBlockTests {
    @Test func virtioBlkWritesReadsFlushesAndIdentifies() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-disk-\(UUID().uuidString).img").path
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 4 << 20)))
        defer { try? FileManager.default.removeItem(atPath: image) }
        let vm = try BootedMachine(kernel: try Guests.mini.get(), cmdline: "blktest=1", memory: 32 << 20,
                                   devices: ["virtio-blk,disk=\(image),serial=mini-disk"])
        let (exit, out) = vm.boot(timeout: 60)
        #expect(exit == .reset)
        #expect(out.contains("pci 00:01.0 1af4:1042 class 010000"))
        #expect(out.contains("virtio-blk 00:01.0: 8192 sectors"))
        #expect(out.contains("virtio-blk: write 0, read 0 (same data), flush 0, serial 'mini-disk'"))
        #expect(out.contains("blktest: 1 devices, ok"))
        let sector = try #require(FileManager.default.contents(atPath: image)).subdata(in: 512 ..< 1024)
        #expect(Array(sector) == (0 ..< 512).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
    }
}

/// Guest failures end the VM with a non-zero status and a register dump, never a hang or a trap.
@Suite(.enabled(if: Host.hasKVM, "needs /dev/kvm (read/write)"))
struct GuestFailureTests {
    @Test func tripleFaultStopsWithRegisterDump() throws {
        // ud2 with no IDT: #UD → #DF → triple fault → KVM_EXIT_SHUTDOWN.
        let path = try TestELF.write(TestELF.pvh(code: [0x0F, 0x0B]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let vm = try BootedMachine(kernel: path, cmdline: "", memory: 16 << 20)
        let (exit, _) = vm.boot(timeout: 30)
        guard case let .tripleFault(cpu, registers) = exit else {
            Issue.record("expected a triple fault, got \(String(describing: exit))")
            return
        }
        #expect(cpu == 0)
        #expect(registers.contains("rip="))
        #expect(exit?.exitStatus == 1)
    }

    @Test func portIOResetFromTinyGuest() throws {
        // mov $0xfe, %al; out %al, $0x64 — the i8042 reset line.
        let path = try TestELF.write(TestELF.pvh(code: [0xB0, 0xFE, 0xE6, 0x64, 0xF4]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let vm = try BootedMachine(kernel: path, cmdline: "", memory: 16 << 20)
        let (exit, _) = vm.boot(timeout: 30)
        #expect(exit == .reset)
        #expect(exit?.exitStatus == 0)
    }
}
