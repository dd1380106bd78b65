import Synchronization
import Testing
import VMMCore
import VMMTestKit

/// Counts what the bus asks of a doorbell accelerator (KVMDoorbells' place in a test), and
/// refuses a place another doorbell holds, as KVM_IOEVENTFD answers EEXIST.
final class CountingDoorbells: DoorbellAccelerator, @unchecked Sendable {
    struct Counts { var made = 0, moves = 0 }
    let counts = Mutex(Counts())
    /// Places taken, by this accelerator's doorbells or by `occupy` (another device's
    /// doorbell that has not moved away yet).
    let taken = Mutex<[DoorbellPlace]>([])

    final class Doorbell: AcceleratedDoorbell, @unchecked Sendable {
        let owner: CountingDoorbells
        var place: DoorbellPlace?
        init(owner: CountingDoorbells) { self.owner = owner }
        func move(to new: DoorbellPlace?) -> Bool {
            guard new != place else { return true }
            owner.counts.withLock { $0.moves += 1 }
            return owner.taken.withLock { taken in
                if let old = place, let i = taken.firstIndex(of: old) { taken.remove(at: i) }
                place = nil
                guard let new else { return true }
                if taken.contains(new) { return false }
                taken.append(new)
                place = new
                return true
            }
        }
    }

    func makeDoorbell(size: Int, value: UInt64?, handler: @escaping @Sendable () -> Void) -> AcceleratedDoorbell? {
        counts.withLock { $0.made += 1 }
        return Doorbell(owner: self)
    }

    func occupy(_ place: DoorbellPlace) { taken.withLock { $0.append(place) } }
    func vacate(_ place: DoorbellPlace) { taken.withLock { $0.removeAll { $0 == place } } }
}

/// What a command or BAR write changes in decoding, and what it leaves alone (found by a
/// hostile read of the PCI core).
@Suite struct BARRemapTests {
    /// A machine whose doorbells `CountingDoorbells` records, and one device, enabled, with
    /// `count` doorbells in BAR4, 4 bytes apart. The machine is kept here: a `TestDevice`
    /// holds it unowned.
    private struct Rig {
        let machine: TestMachine
        let doorbells = CountingDoorbells()
        let dev: TestDevice

        init(doorbells count: Int) throws {
            machine = try TestMachine()
            machine.bus.doorbellAccelerator = doorbells
            dev = try machine.add(SampleDevice.self, enable: false)
            for q in 0 ..< count { dev.function.doorbells.register(bar: 4, offset: UInt64(q) * 4, size: 2) {} }
            dev.enable()
        }
    }

    /// Decoding off, the first doorbell's place taken (as another device's doorbell not yet
    /// moved away holds it), decoding on: that doorbell is refused. Returns the place.
    private func refuseFirstDoorbell(of dev: TestDevice, _ doorbells: CountingDoorbells) -> DoorbellPlace {
        let command = dev.configRead(0x04, size: 2)
        dev.configWrite(0x04, size: 2, value: command & ~2)
        let stale = DoorbellPlace(space: .memory, address: UInt64(dev.barAddress(4)))
        doorbells.occupy(stale)
        dev.configWrite(0x04, size: 2, value: command)
        return stale
    }

    /// Linux's pci_intx and pci_clear_master write the command register without touching
    /// decoding: doorbells stay as they are. Each such write re-created all of them (for
    /// 256 queues: 512 ioeventfd ioctls under the device lock), and a kick counted in a
    /// closed eventfd was lost.
    @Test func commandBitsBesidesDecodingLeaveDoorbellsAlone() throws {
        let rig = try Rig(doorbells: 256)
        let (doorbells, dev) = (rig.doorbells, rig.dev)
        let before = doorbells.counts.withLock { $0 }
        #expect(before.made == 256 && before.moves == 256)
        let command = dev.configRead(0x04, size: 2)
        for _ in 0 ..< 10 {
            dev.configWrite(0x04, size: 2, value: command ^ interruptDisable)
            dev.configWrite(0x04, size: 2, value: command)
        }
        let after = doorbells.counts.withLock { $0 }
        #expect(after.made == before.made && after.moves == before.moves)
        // Turning memory decoding off and on does move them.
        dev.configWrite(0x04, size: 2, value: command & ~2)
        dev.configWrite(0x04, size: 2, value: command)
        #expect(doorbells.counts.withLock { $0 }.moves == before.moves + 512)
    }

    /// A `rep outsw` toggling memory decoding a thousand times in one exit made a new
    /// eventfd per doorbell per toggle and closed the old ones later on the I/O loop, so
    /// descriptors piled up until the loop ran. A doorbell is now made once and only
    /// moved (QEMU keeps a queue's host notifier across BAR moves the same way).
    @Test func decodingTogglesMoveDoorbellsWithoutMakingNewOnes() throws {
        let rig = try Rig(doorbells: 8)
        let (doorbells, dev) = (rig.doorbells, rig.dev)
        let command = dev.configRead(0x04, size: 2)
        for _ in 0 ..< 1000 {
            dev.configWrite(0x04, size: 2, value: command & ~2)
            dev.configWrite(0x04, size: 2, value: command)
        }
        #expect(doorbells.counts.withLock { $0 }.made == 8)
        let bar4 = UInt64(dev.barAddress(4))
        #expect(doorbells.taken.withLock { $0 }.map(\.address).sorted() == (0 ..< 8).map { bar4 + UInt64($0) * 4 })
    }

    /// The other device may let go of the place between the refusal and the refused
    /// device's entry in the retry list, and then finds no one to retry: a newly refused
    /// doorbell is tried once more from the loop by itself (found by a hostile read).
    @Test func aNewlyRefusedDoorbellIsTriedAgainFromTheLoop() throws {
        let rig = try Rig(doorbells: 1)
        let (machine, doorbells, a) = (rig.machine, rig.doorbells, rig.dev)
        let stale = refuseFirstDoorbell(of: a, doorbells)
        doorbells.vacate(stale)   // let go, with nothing released on the bus
        _ = machine.loop.runQueuedWork()
        #expect(doorbells.taken.withLock { $0 } == [stale])
    }

    /// Two vCPUs moving BARs at once: device A's BAR moves onto where device B's was while
    /// B's doorbell still holds the place (KVM answers EEXIST). A's doorbell stayed on the
    /// exit path until A's next move; it is now placed again once something is released.
    @Test func aDoorbellRefusedForAnotherDevicesIsPlacedOnceThatMoves() throws {
        let rig = try Rig(doorbells: 1)
        let (machine, doorbells, a) = (rig.machine, rig.doorbells, rig.dev)
        let b = try machine.add(SampleDevice.self)
        let stale = refuseFirstDoorbell(of: a, doorbells)   // decodes again; its doorbell is refused
        #expect(a.function.mappedBARs[4] != nil)
        #expect(doorbells.taken.withLock { $0 } == [stale])
        doorbells.vacate(stale)
        b.configWrite(0x10, value: 0xF000_0000)   // any release retries what was refused
        _ = machine.loop.runQueuedWork()
        #expect(doorbells.taken.withLock { $0 } == [stale])
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

    /// A guest toggling another function's memory decoding releases a mapping per "off":
    /// each queued a retry of the refused mappings on the loop, 1,024 per `rep outsw`, and
    /// the loop fell behind. At most one retry waits now.
    @Test func releasesQueueOneRetryOfTheRefusedMappings() throws {
        let machine = try TestMachine()
        let a = try machine.add(SampleDevice.self)
        let b = try machine.add(SampleDevice.self)
        a.configWrite(0x10, value: UInt32(b.barAddress(0)))    // refused: on b's BAR0
        _ = machine.loop.runQueuedWork()
        let command = b.configRead(0x04, size: 2)
        for _ in 0 ..< 200 {
            b.configWrite(0x04, size: 2, value: command & ~2)   // memory decoding off: a release
            b.configWrite(0x04, size: 2, value: command)
        }
        #expect(machine.loop.runQueuedWork() == 1)
        #expect(a.function.mappedBARs[0] == nil)                 // b took its place back each time
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
        let rig = try Rig(doorbells: 16)
        let (doorbells, dev) = (rig.doorbells, rig.dev)
        dev.configWrite(0x10, value: UInt32(dev.barAddress(4)))   // BAR0 onto BAR4: refused
        #expect(dev.function.mappedBARs[0] == nil)
        let before = doorbells.counts.withLock { $0 }
        let command = dev.configRead(0x04, size: 2)
        for _ in 0 ..< 20 {
            dev.configWrite(0x04, size: 2, value: command ^ interruptDisable)
            dev.configWrite(0x04, size: 2, value: command)
        }
        let after = doorbells.counts.withLock { $0 }
        #expect(after.made == before.made && after.moves == before.moves)
    }
}
