import Testing
import VMMCore
import VMMTestKit

/// The chipset's Reset Control Register (found by a hostile read of the platform).
@Suite struct ResetControlTests {
    /// 0xCF9, a byte inside CONFIG_ADDRESS's dword, is the chipset's Reset Control
    /// Register: Linux's reboot=pci writes 0x02, then 0x06; the second pulls the reset
    /// line. It was swallowed, and such a guest's reboot ended in a triple fault.
    @Test func theResetControlRegisterPullsTheResetLine() throws {
        final class Count: @unchecked Sendable { var resets = 0 }
        let machine = try TestMachine()
        let count = Count()
        machine.bus.resetRequest = { count.resets += 1 }
        machine.pio.write(0xCF9, size: 1, value: 0x02)
        #expect(count.resets == 0)
        #expect(machine.pio.read(0xCF9, size: 1) == 0x02)
        machine.pio.write(0xCF9, size: 1, value: 0x06)
        #expect(count.resets == 1)
        machine.pio.write(0xCF8, size: 4, value: 0x8000_0000)   // CONFIG_ADDRESS is untouched
        #expect(machine.pio.read(0xCF8, size: 4) == 0x8000_0000)
    }
}
