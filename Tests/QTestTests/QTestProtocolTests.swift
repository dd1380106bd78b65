import Testing
import QTest
import VMMCore

/// The qtest protocol as swiftvmm serves it, formats checked against QEMU 7.2's qtest.c.
@Suite struct QTestProtocolTests {
    @Test func portIOAndConfigCycles() throws {
        let s = try Session(devices: ["ticker,slot=4"])
        #expect(s.ask("outl 0xcf8 0x80000000") == "OK")
        #expect(s.ask("inl 0xcfc") == "OK 0x12378086")
        #expect(s.ask("inw 0xcfe") == "OK 0x1237")
        #expect(s.ask("inl 0xcf8") == "OK 0x80000000")
        #expect(s.ask("outl 0xcf8 0x80002000") == "OK") // slot 4
        #expect(s.ask("inl 0xcfc") == "OK 0xf11b36") // %04x, as QEMU
        #expect(s.ask("inb 0xcfd") == "OK 0x001b")
        #expect(s.ask("outl 0xcf8 0x8000f800") == "OK") // slot 31: empty
        #expect(s.ask("inl 0xcfc") == "OK 0xffffffff")
        #expect(s.ask("inb 0x1234") == "OK 0x00ff")
        #expect(s.ask("outb 0x80 1") == "OK")
        #expect(s.ask("inl 0x10000") == "FAIL port 0x10000 is above 0xffff")
    }

    @Test func memoryCommands() throws {
        let s = try Session()
        #expect(s.ask("writel 0x100000 0x12345678") == "OK")
        #expect(s.ask("readl 0x100000") == "OK 0x0000000012345678")
        #expect(s.ask("readq 0x100000") == "OK 0x0000000012345678")
        #expect(s.ask("readb 0x100001") == "OK 0x0000000000000056")
        #expect(s.ask("readw 0x100002") == "OK 0x0000000000001234")
        #expect(s.ask("read 0x100000 8") == "OK 0x7856341200000000")
        #expect(s.ask("write 0x100000 4 0xdeadbeef") == "OK")
        #expect(s.ask("b64read 0x100000 5") == "OK 3q2+7wA=")
        #expect(s.ask("memset 0x100000 3 0x41") == "OK")
        #expect(s.ask("read 0x100000 4") == "OK 0x414141ef")
        #expect(s.ask("b64write 0x100000 4 QUJDRA==") == "OK")
        #expect(s.ask("read 0x100000 4") == "OK 0x41424344")
        #expect(s.ask("write 0x100000 4 0x11") == "OK") // short data: zero filled
        #expect(s.ask("read 0x100000 4") == "OK 0x11000000")
        #expect(s.ask("writeq 0x200000 0x0102030405060708") == "OK")
        #expect(s.ask("readq 0x200000") == "OK 0x0102030405060708")
        #expect(s.ask("writew 0x200000 0x1ffff") == "OK") // truncated to the access size
        #expect(s.ask("readl 0x200000") == "OK 0x000000000506ffff")
        #expect(s.ask("memset 0x200000 0 0") == "OK")
        #expect(s.ask("writel 0x200000 010") == "OK") // strtoul base 0: octal
        #expect(s.ask("readb 0x200000") == "OK 0x0000000000000008")
        #expect(s.ask("writeb 0x200000 -1") == "OK") // wraps like strtoull
        #expect(s.ask("readb 0x200000") == "OK 0x00000000000000ff")
    }

    @Test func errorsNeverStopTheServer() throws {
        let s = try Session()
        #expect(s.ask("foo 1 2") == "FAIL Unknown command 'foo'")
        #expect(s.ask("") == "FAIL Unknown command ''")
        #expect(s.ask("write 0x1000 4 0x") == "ERR invalid argument size")
        #expect(s.ask("write 0x1000 2 0xzz00") == "FAIL DATA is not hex")
        #expect(s.ask("readl") == "FAIL readl needs ADDR")
        #expect(s.ask("readl banana") == "FAIL readl needs ADDR")
        #expect(s.ask("read 0x1000 0") == "FAIL SIZE must not be 0")
        #expect(s.ask("read 0x1000 0x100000000") == "FAIL SIZE 0x100000000 is above 0x4000000")
        #expect(s.ask("readq 0xfffffffffffffffc") == "FAIL range wraps past 2^64")
        #expect(s.ask("memset 0xffffffffffffffff 2 0") == "FAIL range wraps past 2^64")
        #expect(s.ask("module_load a b") == "FAIL")
        #expect(s.ask("endianness") == "OK little")
        // Outside RAM and devices: reads are all ones, writes vanish, nothing traps.
        #expect(s.ask("readl 0xe0000000") == "OK 0x00000000ffffffff")
        #expect(s.ask("write 0xdffffffe 4 0x01020304") == "OK") // nothing there
        #expect(s.ask("read 0x7fffffe 4") == "OK 0x0000ffff")   // last RAM bytes, then nothing
        #expect(s.ask("endianness\r") == "OK little")
        #expect(s.ask("readl  0x100000") == "OK 0x0000000000000000") // extra spaces tolerated
    }

    @Test func clockIsVirtualAndDrivesDeviceTimers() throws {
        let s = try Session(devices: ["ticker,slot=3"])
        // Place BAR0 at 0xe0000000 and turn on memory decode, as a script would.
        s.ask("outl 0xcf8 0x80001810")
        s.ask("outl 0xcfc 0xe0000000")
        s.ask("outl 0xcf8 0x80001804")
        s.ask("outw 0xcfc 0x0006")
        #expect(s.ask("writel 0xe0000000 0xcafe") == "OK")
        #expect(s.ask("readl 0xe0000000") == "OK 0x000000000000cafe")
        #expect(s.ask("clock_step") == "OK 0") // no timer pending: time stays
        #expect(s.ask("writel 0xe0000004 1000") == "OK") // fire in 1 µs
        #expect(s.ask("clock_step 999") == "OK 999")
        #expect(s.ask("readl 0xe000000c") == "OK 0x0000000000000000")
        #expect(s.ask("clock_step") == "OK 1000") // to the next deadline
        #expect(s.ask("readl 0xe000000c") == "OK 0x0000000000000001")
        #expect(s.ask("writel 0xe0000004 500") == "OK")
        #expect(s.ask("clock_set 5000") == "OK 5000")
        #expect(s.ask("readl 0xe000000c") == "OK 0x0000000000000002")
        #expect(s.ask("clock_set 10") == "OK 5000") // never backwards
        #expect(s.ask("clock_step -5") == "OK 5000")
    }

    @Test func interceptedINTxArrivesAsAsyncIRQLines() throws {
        let s = try Session(devices: ["ticker,slot=3"])
        let line = PCIBus.defaultINTxRoute(3, 1)
        s.ask("outl 0xcf8 0x80001814") // BAR1: I/O
        s.ask("outl 0xcfc 0xc000")
        s.ask("outl 0xcf8 0x80001804")
        s.ask("outw 0xcfc 0x0005")      // I/O decode + bus master
        #expect(s.ask("irq_intercept_in nosuch") == "FAIL Unknown device")
        // Before intercepting, nothing is reported.
        s.ask("outl 0xc004 10")
        s.ask("clock_step 10")
        s.ask("outl 0xc008 0")
        #expect(s.asyncLines.isEmpty)
        #expect(s.ask("irq_intercept_in ioapic") == "OK")
        #expect(s.ask("irq_intercept_in ioapic") == "OK")
        #expect(s.ask("irq_intercept_in /machine/i440fx/ioapic") == "FAIL IRQ intercept already enabled")
        s.ask("outl 0xc004 10")
        #expect(s.ask("clock_step 10") == "OK 20")
        #expect(s.asyncLines == ["IRQ raise \(line)"])
        s.ask("outl 0xc008 0")
        #expect(s.asyncLines == ["IRQ raise \(line)", "IRQ lower \(line)"])
    }

    @Test func msixMessagesAreMemoryWrites() throws {
        let s = try Session(devices: ["ticker,slot=3"])
        s.ask("outl 0xcf8 0x80001810")
        s.ask("outl 0xcfc 0xe0000000")
        s.ask("outl 0xcf8 0x80001804")
        s.ask("outw 0xcfc 0x0006")
        // Entry 0: address in guest RAM (how libqos observes MSI-X), data 0x1234; entry 1: the LAPIC.
        s.ask("writel 0xe0000800 0x300000")
        s.ask("writel 0xe0000804 0")
        s.ask("writel 0xe0000808 0x1234")
        s.ask("writel 0xe000080c 0")
        // MSI-X capability at 0x40: enable (control bit 15).
        s.ask("outl 0xcf8 0x80001840")
        s.ask("outw 0xcfe 0x8000")
        s.ask("writel 0xe0000004 1")
        s.ask("clock_step 1")
        #expect(s.ask("readl 0x300000") == "OK 0x0000000000001234")
        #expect(s.ask("msi_log") == "OK 0x0000000000300000:0x00001234")
        #expect(s.ask("msi_log") == "OK")
        // Masked: the pending bit shows in the PBA, the message comes on unmask.
        s.ask("writel 0x300000 0")
        s.ask("writel 0xe000080c 1")
        s.ask("writel 0xe0000004 1")
        s.ask("clock_step 1")
        #expect(s.ask("readl 0xe0000c00") == "OK 0x0000000000000001")
        #expect(s.ask("readl 0x300000") == "OK 0x0000000000000000")
        s.ask("writel 0xe000080c 0")
        #expect(s.ask("readl 0x300000") == "OK 0x0000000000001234")
        #expect(s.ask("readl 0xe0000c00") == "OK 0x0000000000000000")
    }

    /// Each names the `--device` entry as written, then the problem.
    @Test func machineErrorsNameTheProblem() throws {
        let slot = QTestMachineError.badSlot(device: "ticker", value: "40")
        #expect(throws: QTestMachineError.device(text: "ticker,slot=40", reason: slot.description)) {
            try QTestMachine(devices: ["ticker,slot=40"], registry: PCIDeviceRegistry([TickerDevice.self]))
        }
        let unknown = OptionError.unknownOption(device: "ticker", key: "speed")
        #expect(throws: QTestMachineError.device(text: "ticker,speed=9", reason: unknown.description)) {
            try QTestMachine(devices: ["ticker,speed=9"], registry: PCIDeviceRegistry([TickerDevice.self]))
        }
        #expect(throws: QTestMachineError.self) { try QTestMachine(devices: ["nic"], registry: PCIDeviceRegistry([])) }
    }
}
