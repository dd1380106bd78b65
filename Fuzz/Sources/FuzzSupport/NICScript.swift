#if canImport(Glibc)
import Glibc
#endif
import VMMCore
import VMMNet
import VMMTestKit

/// What the NIC targets share: a small test machine, one device enabled by firmware, and
/// the guest-side moves every NIC target interleaves with register accesses — writes to
/// guest memory, frames from the backend, link changes, virtual time, config cycles.
public struct NICScript {
    public let machine: TestMachine
    public let device: TestDevice
    /// Guest RAM the scripts use for rings and buffers (and scribble on).
    public static let ramSize: UInt64 = 2 << 20

    /// A backend that finishes offloads itself, as TAP with a virtio-net header does: the
    /// devices then hand it TSO and checksum requests whole, their payload straight from
    /// guest memory (e1000's TransmitAssembly.swift), a path the plain backend never takes.
    public static let offloadingBackend = BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN],
                                                              maxFrameSize: 65_535)

    /// - Parameter backend: the capabilities of the device's in-memory backend; fixed for
    ///   the device's life, since its link keeps them (`LinkControl`).
    public init?(_ type: any PCIDevice.Type, options: String = "", backend: BackendCapabilities = BackendCapabilities()) {
        guard let machine = try? TestMachine(memorySize: NICScript.ramSize) else { return nil }
        machine.network.enqueue(InMemoryEndpoint(capabilities: backend))
        guard let device = try? machine.add(type, options: options) else { return nil }
        self.machine = machine
        self.device = device
    }

    /// One guest-side move that is not a register access; false if `choice` named none.
    /// Runs the work devices deferred to the I/O loop (bounded turns: each continuation
    /// is itself an action), then fails the input if any single action — register access,
    /// doorbell, backend frame or continuation — cost more than the budget (issue 12).
    public func checkActionBudget() {
        var turns = 0
        while machine.loop.runQueuedWork() > 0 && turns < 10_000 { turns += 1 }
        let meter = device.function.cost
        if getenv("FUZZ_REPORT_COST") != nil { print("worst-action \(meter.worst.descriptors) \(meter.worst.frames) \(meter.worst.bytes)") }
        fuzzCheck(meter.worst.fits(meter.budget), "one action cost \(meter.worst), budget \(meter.budget)")
    }

    public func guestMove(_ choice: UInt8, _ input: inout FuzzInput) -> Bool {
        switch choice {
        case 0: // guest writes anywhere in the first 256 KiB (rings, descriptors, buffers)
            let address = UInt64(input.integer(UInt32.self)) % 0x4_0000
            try? machine.memory.writeBytes(input.bytes(upTo: 64), at: GuestAddress(address))
        case 1: // a frame from the wire, sometimes with a virtio-net header
            let frame = input.bytes(upTo: 255) + [UInt8](repeating: 0x5A, count: Int(input.byte() % 8) * 1024)
            let header: VirtioNetHeader? = input.bool() ? nil : VirtioNetHeader(
                flags: input.byte(), gsoType: input.byte(), headerLength: input.integer(), gsoSize: input.integer(),
                checksumStart: input.integer(), checksumOffset: input.integer())
            device.endpoint?.inject(frame, header: header)
        case 2:
            device.endpoint?.setLink(up: input.bool())
        case 3: // time passes: moderation timers, link timers
            machine.advance(nanoseconds: UInt64(input.integer(UInt32.self)) << UInt64(input.byte() % 16))
        case 4: // config space: command register (decode, bus master, INTx disable), anything else
            let offset = input.bool() ? 0x04 : Int(input.byte())
            device.configWrite(offset, size: [1, 2, 4][input.choose(3)], value: input.integer(UInt32.self))
        case 5: // the device's backend takes frames again
            device.endpoint?.capabilities.maxFrameSize = [60, 1514, 9216, 65535][input.choose(4)]
        case 6: // a readiness event's worth of frames in one delivery (TAP hands over up to 64)
            let frames = (0 ..< 1 + input.choose(64)).map { _ in
                input.bytes(upTo: 128) + [UInt8](repeating: 0x5A, count: Int(input.byte() % 4) * 512)
            }
            device.endpoint?.deliver(frames, header: input.bool() ? nil : VirtioNetHeader())
        case 7: // the I/O loop's turn between guest moves, not only at the end:
                // continuations past the budget, resumed receives
            machine.loop.runQueuedWork()
        default:
            return false
        }
        return true
    }
}
