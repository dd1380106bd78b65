import Synchronization
import Testing
import VMMCore
import VMMTestKit

/// Counts what the bus asks of a doorbell accelerator (KVMDoorbells' place in a test).
final class CountingDoorbells: DoorbellAccelerator, @unchecked Sendable {
    let counts = Mutex<(attach: Int, detach: Int)>((0, 0))
    final class Token {}
    func attach(space: AddressSpaceKind, address: UInt64, size: Int, value: UInt64?,
                handler: @escaping @Sendable () -> Void) -> AnyObject? {
        counts.withLock { $0.attach += 1 }
        return Token()
    }
    func detach(_ token: AnyObject) { counts.withLock { $0.detach += 1 } }
}

/// What a command or BAR write changes in decoding, and what it leaves alone (found by a
/// hostile read of the PCI core).
@Suite struct BARRemapTests {
    /// Linux's pci_intx and pci_clear_master write the command register without touching
    /// decoding: doorbells stay as they are. Each such write re-created all of them (for
    /// 256 queues: 512 ioeventfd ioctls under the device lock), and a kick counted in a
    /// closed eventfd was lost.
    @Test func commandBitsBesidesDecodingLeaveDoorbellsAlone() throws {
        let machine = try TestMachine()
        let doorbells = CountingDoorbells()
        machine.bus.doorbellAccelerator = doorbells
        let dev = try machine.add(SampleDevice.self, enable: false)
        for q in 0 ..< 256 { dev.function.doorbells.register(bar: 4, offset: UInt64(q) * 4, size: 2) {} }
        dev.enable()
        let before = doorbells.counts.withLock { $0 }
        #expect(before.attach == 256)
        let command = dev.configRead(0x04, size: 2)
        for _ in 0 ..< 10 {
            dev.configWrite(0x04, size: 2, value: command ^ interruptDisable)
            dev.configWrite(0x04, size: 2, value: command)
        }
        let after = doorbells.counts.withLock { $0 }
        #expect(after.attach == before.attach && after.detach == before.detach)
        // Turning memory decoding off and on does move them.
        dev.configWrite(0x04, size: 2, value: command & ~2)
        dev.configWrite(0x04, size: 2, value: command)
        #expect(doorbells.counts.withLock { $0 }.attach == before.attach + 256)
    }

    /// A BAR refused for overlapping another device's BAR decodes once that BAR moves
    /// away, as on hardware (Linux moves BARs with decoding on for 32-bit ones). It stayed
    /// dead: only its own function's writes re-ran the mapping.
    @Test func aBARRefusedForAnOverlapDecodesOnceTheOtherMoves() throws {
        let machine = try TestMachine()
        let a = try machine.add(SampleDevice.self)
        let b = try machine.add(SampleDevice.self)
        let shared = b.barAddress(0)
        a.configWrite(0x10, value: UInt32(shared))
        #expect(a.function.mappedBARs[0] == nil)
        b.configWrite(0x10, value: 0xF000_0000)
        #expect(b.function.mappedBARs[0] == 0xF000_0000 ..< 0xF000_1000)
        _ = machine.loop.runQueuedWork()
        #expect(a.function.mappedBARs[0] == UInt64(shared) ..< UInt64(shared) + 0x1000)
        a.write32(bar: 0, offset: 0, 0x1234)
        #expect(a.read32(bar: 0, offset: 0) == 0x1234)
    }

    /// The same within one function: BAR0 refused for sitting on BAR4 decodes once BAR4
    /// moves away (BARs are handled in index order, so BAR0 was refused before BAR4 left).
    @Test func aBARRefusedForItsOwnFunctionsBARDecodesOnceThatMoves() throws {
        let machine = try TestMachine()
        let dev = try machine.add(SampleDevice.self)
        let bar4 = dev.barAddress(4)
        dev.configWrite(0x10, value: UInt32(bar4))
        #expect(dev.function.mappedBARs[0] == nil)
        dev.configWrite(0x20, value: 0xE000_0000)
        _ = machine.loop.runQueuedWork()
        #expect(dev.function.mappedBARs[4] == 0xE000_0000 ..< 0xE001_0000)
        #expect(dev.function.mappedBARs[0] == UInt64(bar4) ..< UInt64(bar4) + 0x1000)
    }

    /// A BAR that stays refused is no reason to re-create the doorbells: toggling
    /// Interrupt Disable did so for every doorbell of the device, every time.
    @Test func aBARStillRefusedLeavesDoorbellsAlone() throws {
        let machine = try TestMachine()
        let doorbells = CountingDoorbells()
        machine.bus.doorbellAccelerator = doorbells
        let dev = try machine.add(SampleDevice.self, enable: false)
        for q in 0 ..< 16 { dev.function.doorbells.register(bar: 4, offset: UInt64(q) * 4, size: 2) {} }
        dev.enable()
        dev.configWrite(0x10, value: UInt32(dev.barAddress(4)))   // BAR0 onto BAR4: refused
        #expect(dev.function.mappedBARs[0] == nil)
        let before = doorbells.counts.withLock { $0 }
        let command = dev.configRead(0x04, size: 2)
        for _ in 0 ..< 20 {
            dev.configWrite(0x04, size: 2, value: command ^ interruptDisable)
            dev.configWrite(0x04, size: 2, value: command)
        }
        let after = doorbells.counts.withLock { $0 }
        #expect(after.attach == before.attach && after.detach == before.detach)
    }
}
