import Testing
import QTest
import VMMCore
#if canImport(DeviceCatalog)
import DeviceCatalog
#endif

/// The same qtest script against swiftvmm and against QEMU 7.2: the answers that should
/// agree do, line for line. Differences by design are listed in Docs/testing.md.
@Suite(.serialized, .enabled(if: QEMUReference.isAvailable, "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"),
       .timeLimit(.minutes(2)))
struct QEMUComparisonTests {
    /// Runs `script` on both; returns the pairs that differ as "request: swiftvmm | qemu".
    static func compare(_ script: [String], swiftvmm: Session, qemu: QEMUReference) -> [String] {
        script.compactMap { request in
            let ours = swiftvmm.ask(request), theirs = qemu.ask(request)
            return ours == theirs ? nil : "\(request): swiftvmm '\(ours)' | qemu '\(theirs)'"
        }
    }

    /// Formats, config cycles to the host bridge and empty slots, guest memory, errors.
    static let platformScript = [
        "endianness",
        "outl 0xcf8 0x80000000", "inl 0xcfc", "inw 0xcfe", "inb 0xcfc", "inl 0xcf8",
        "outl 0xcf8 0x80000008", "inb 0xcfe", "inw 0xcfe",           // host bridge class 06/00
        "outl 0xcf8 0x8000f800", "inl 0xcfc", "inw 0xcfe",           // slot 31: nothing
        "outl 0xcf8 0x80010000", "inl 0xcfc",                        // bus 1: nothing
        "inl 0x1234", "inw 0x1234", "inb 0x1234",                    // unclaimed ports
        "writel 0x100000 0x12345678", "readl 0x100000", "readq 0x100000", "readw 0x100002", "readb 0x100003",
        "read 0x100000 8", "write 0x100000 4 0xdeadbeef", "readl 0x100000",
        "b64read 0x100000 5", "memset 0x100000 3 0x41", "read 0x100000 4",
        "b64write 0x100000 4 QUJDRA==", "read 0x100000 4", "write 0x100000 4 0x11", "read 0x100000 4",
        "writeq 0x200000 0x0102030405060708", "readq 0x200000", "readl 0x200004", "read 0x200006 2",
        "writew 0x7fffffe 0xbeef", "readw 0x7fffffe",                // last bytes of 128 MiB
        "memset 0x300000 0 0x55", "readb 0x300000",
        "write 0x1000 4 0x", "foo", "module_load a b",
        "irq_intercept_in nosuch", "irq_intercept_in ioapic", "irq_intercept_in ioapic", "irq_intercept_out ioapic",
    ]

    @Test func platformAndMemoryAnswersMatchQEMU() throws {
        let qemu = try QEMUReference(devices: [])
        let ours = try Session(devices: [])
        let differences = Self.compare(Self.platformScript, swiftvmm: ours, qemu: qemu)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
    }

    /// Where swiftvmm differs from QEMU on purpose; each answer pinned on both sides.
    @Test func intendedDifferencesStayAsDocumented() throws {
        let qemu = try QEMUReference(devices: [])
        let ours = try Session(devices: [])
        let expected: [(request: String, swiftvmm: String, qemu: String)] = [
            // Time is virtual here; QEMU without the qtest accelerator refuses to step.
            ("clock_step 100", "OK 100", "FAIL Unknown command 'clock_step'"),
            ("clock_set 500", "OK 500", "FAIL Unknown command 'clock_set'"),
            // Unclaimed MMIO: a PCI master abort reads all ones; QEMU's unassigned memory reads 0.
            ("readl 0xe0000000", "OK 0x00000000ffffffff", "OK 0x0000000000000000"),
            // No firmware image is mapped at the top of 4 GiB here.
            ("readw 0xfffffff0", "OK 0x000000000000ffff", "OK 0x000000000000ebf4"),
        ]
        for e in expected {
            #expect(ours.ask(e.request) == e.swiftvmm, "swiftvmm: \(e.request)")
            #expect(qemu.ask(e.request) == e.qemu, "qemu: \(e.request)")
        }
    }

    #if canImport(DeviceCatalog)
    /// An e1000 in slot 4 on both: identity through config cycles, BAR sizing and placement,
    /// decode enable, and a register write/read through the BAR.
    static let e1000Script = [
        "outl 0xcf8 0x80002000", "inl 0xcfc", "inw 0xcfc", "inw 0xcfe",
        "outl 0xcf8 0x8000200c", "inb 0xcfe",                        // header type 0
        "outl 0xcf8 0x80002010", "outl 0xcfc 0xffffffff", "inl 0xcfc", // BAR0 size: 128 KiB
        "outl 0xcf8 0x80002010", "outl 0xcfc 0xe0000000", "inl 0xcfc",
        "outl 0xcf8 0x8000203c", "inb 0xcfd",                        // INTA
        "outl 0xcf8 0x80002004", "outw 0xcfc 0x0006",                // memory decode + bus master
        "writel 0xe0002804 0x12345678", "readl 0xe0002804",          // RDBAH
        "writel 0xe0003804 0x0badf00d", "readl 0xe0003804",          // TDBAH
        "writel 0xe0005400 0x00123456", "readl 0xe0005400",          // RAL0
        "outl 0xcf8 0x80002004", "outw 0xcfc 0x0004",                // memory decode off
        "readl 0xe0002804",                                          // no longer decoded
    ]

    @Test(.enabled(if: (try? DeviceCatalog.registry.lookup("e1000")) != nil, "needs e1000 in DeviceCatalog.registry"))
    func e1000ConfigSpaceAndBARMatchQEMU() throws {
        let qemu = try QEMUReference(devices: ["e1000,addr=04.0"])
        let ours = try Session(devices: ["e1000,slot=4"], registry: DeviceCatalog.registry)
        var differences = Self.compare(Self.e1000Script, swiftvmm: ours, qemu: qemu)
        // Unclaimed MMIO reads differ by design (see intendedDifferencesStayAsDocumented).
        differences.removeAll { $0.hasPrefix("readl 0xe0002804: swiftvmm 'OK 0x00000000ffffffff' | qemu 'OK 0x0000000000000000'") }
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
    }

    /// A modern virtio-net (QEMU: `disable-legacy=on`) in slot 4: identity, status and header
    /// match. BAR and capability layout are each device's own choice and differ.
    static let virtioNetScript = [
        "outl 0xcf8 0x80002000", "inl 0xcfc",                        // 1af4:1041
        "outl 0xcf8 0x80002004", "inl 0xcfc",                        // command/status: capability list
        "outl 0xcf8 0x80002008", "inl 0xcfc",                        // class 02/00/00, revision 1
        "outl 0xcf8 0x8000200c", "inb 0xcfe",                        // header type 0
        "outl 0xcf8 0x8000202c", "inl 0xcfc",                        // subsystem 1af4:1100
        "outl 0xcf8 0x8000203c", "inb 0xcfd",                        // INTA
    ]

    @Test(.enabled(if: (try? DeviceCatalog.registry.lookup("virtio-net")) != nil, "needs virtio-net in DeviceCatalog.registry"))
    func virtioNetIdentityMatchesQEMU() throws {
        let qemu = try QEMUReference(devices: ["virtio-net-pci,disable-legacy=on,addr=04.0"])
        let ours = try Session(devices: ["virtio-net,slot=4"], registry: DeviceCatalog.registry)
        let differences = Self.compare(Self.virtioNetScript, swiftvmm: ours, qemu: qemu)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
    }
    #endif
}
