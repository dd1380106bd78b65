import Testing
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioRng

/// What Linux's virtio_rng does to the device (drivers/char/hw_random/virtio-rng.c):
/// `request_entropy` posts one device-writable buffer of 64 bytes and kicks;
/// `random_recv_done` takes the used length as the bytes it got.
final class VirtioRngDriver: VirtioTestDriver {
    let rng: TestDevice
    var device: VirtioRng? { (rng.function.device as? VirtioRngDevice)?.device }

    init(options: String = "") throws {
        let m = try TestMachine()
        rng = try m.add(VirtioRngDevice.self, options: options)
        super.init(function: rng, machine: m)
    }

    /// Posts one request of `length` writable bytes; returns its address.
    @discardableResult
    func request(_ length: Int = 64, kick: Bool = true) -> GuestAddress {
        let a = buffer(zeroed: length)
        queues[0]?.addChain([(a, UInt32(length), true)])
        if kick { self.kick(0) }
        return a
    }
}

@Suite("virtio-rng") struct VirtioRngTests {
    typealias D = VirtioRngDriver

    /// virtio_pci_modern_probe and virtrng_probe: the modern ID 0x1040 + 4, PCI_CLASS_OTHERS
    /// (QEMU's virtio_rng_pci_class_init), no device feature bits (§5.4.3) and one queue.
    @Test func identityAndFeatures() throws {
        let d = try D()
        #expect(d.rng.configRead(0x00) == 0x1044_1AF4)
        #expect(d.rng.configRead(0x08) >> 8 == 0xFF_00_00)
        #expect(d.deviceFeatures & 0xFF_FFFF == 0)
        #expect(d.deviceFeatures & (1 << 32) != 0)           // VIRTIO_F_VERSION_1
        #expect(d.read(0x12, 2) == 1)                        // num_queues
    }

    @Test func requestsAreFilledWithRandomBytes() throws {
        let d = try D()
        d.bringUp()
        let a = d.request(), b = d.request()
        let used = d.queues[0]?.takeUsed() ?? []
        #expect(used.map(\.length) == [64, 64])
        let first = d.bytes(at: a, 64), second = d.bytes(at: b, 64)
        #expect(first != [UInt8](repeating: 0, count: 64))   // 2^-512 to fail by chance
        #expect(first != second)
        #expect(d.msiVectors.contains(1))
        #expect(d.device?.bytesGiven == 128)
    }

    /// A request takes at most 64 KiB however long its buffers (§5.4.6.1: the device may
    /// use less than the whole buffer); the used length says how much.
    @Test func aHugeRequestGetsAtMost64KiB() throws {
        let d = try D()
        d.bringUp()
        let a = d.request(256 << 10)
        #expect(d.queues[0]?.takeUsed().map(\.length) == [65536])
        #expect(d.bytes(at: GuestAddress(a.raw + 65536), 4096) == [UInt8](repeating: 0, count: 4096))
    }

    /// §5.4.6.2: the driver MUST NOT place driver-readable buffers. Such a chain, or one
    /// outside RAM, comes back empty (Linux reads a used length of 0 as no data), counted.
    @Test func badRequestsComeBackEmpty() throws {
        let d = try D()
        d.bringUp()
        let readable = d.buffer([1, 2, 3, 4])
        d.queues[0]?.addChain([(readable, 4, false), (d.buffer(zeroed: 64), 64, true)])
        d.queues[0]?.addChain([(GuestAddress(0xFFFF_0000_0000), 64, true)])
        d.kick(0)
        #expect(d.queues[0]?.takeUsed().map(\.length) == [0, 0])
        #expect(d.device?.badRequests == 2)
        #expect(d.bytes(at: readable, 4) == [1, 2, 3, 4])
        d.request()
        #expect(d.queues[0]?.takeUsed().map(\.length) == [64])   // and it goes on
    }

    /// QEMU's `max-bytes`/`period`: 100 bytes a second. The first request gets 64, the
    /// second the 36 left; the third waits on the ring until the period ends.
    @Test func theRateLimitHoldsRequestsUntilTheNextPeriod() throws {
        let d = try D(options: "max-bytes=100,period=1000")
        d.bringUp()
        d.request(); d.request(); d.request()
        #expect(d.queues[0]?.takeUsed().map(\.length) == [64, 36])
        d.machine.advance(nanoseconds: 999_000_000)
        #expect(d.queues[0]?.takeUsed().isEmpty == true)
        d.machine.advance(nanoseconds: 1_000_000)
        #expect(d.queues[0]?.takeUsed().map(\.length) == [64])
        #expect(d.device?.throttled ?? 0 >= 1)
        // A reset does not give the guest a fresh quota (QEMU keeps it as host state).
        d.bringUp()
        d.request()
        #expect(d.queues[0]?.takeUsed().map(\.length) == [36])
    }

    /// A period starts with the first byte given, not when the queue was first looked at
    /// (the driver's DRIVER_OK runs it with nothing posted): requests 600 ms later start
    /// it then, and the next refill is 1 s after that.
    @Test func aPeriodStartsWithItsFirstByte() throws {
        let d = try D(options: "max-bytes=100,period=1000")
        d.bringUp()
        d.machine.advance(nanoseconds: 600_000_000)
        d.request(); d.request(); d.request()
        #expect(d.queues[0]?.takeUsed().map(\.length) == [64, 36])
        d.machine.advance(nanoseconds: 500_000_000)
        #expect(d.queues[0]?.takeUsed().isEmpty == true)
        d.machine.advance(nanoseconds: 500_000_000)
        #expect(d.queues[0]?.takeUsed().map(\.length) == [64])
        #expect(d.device?.bytesGiven == 164)
    }

    /// One kick of 1,024 requests of 4 KiB: the kick stops at the per-action budget
    /// (1 MiB) and the rest is served from the I/O loop.
    @Test func aKickIsBoundedAndTheRestContinuesOnTheLoop() throws {
        let d = try D(options: "queue-size=1024")
        d.bringUp()
        for _ in 0 ..< 1024 { d.request(4096, kick: false) }
        let meter = d.rng.function.cost
        meter.resetWorst()
        d.kick(0)
        #expect(d.queues[0]?.usedIndex == 256)
        d.machine.runQueuedWork()
        #expect(d.queues[0]?.usedIndex == 1024)
        #expect(meter.worst.fits(meter.budget), "worst action: \(meter.worst)")
        #expect(meter.worst.bytes <= ActionCostMeter.deferAt.bytes)
    }

    @Test func badOptionsNameTheOption() throws {
        func error(_ options: String) -> String? {
            do { _ = try D(options: options); return nil } catch { return "\(error)" }
        }
        #expect(error("max-bytes=0")?.contains("'max-bytes'") == true)
        #expect(error("period=0")?.contains("'period'") == true)
        #expect(error("queue-size=12")?.contains("power of two") == true)
        #expect(error("bogus=1") == "unknown option 'bogus' for device virtio-rng")
    }
}
