import FuzzSupport
import VMMCore
import VMMTestKit
import VirtioRng

/// Fuzz target: virtio-rng requests from a hostile driver (virtio 1.2 §5.4). The device
/// is brought up as Linux does it, with or without a rate limit, then the input chooses
/// chains (writable and readable buffers, lengths up to 256 KiB, buffers outside RAM),
/// kicks, the passing of time, resets and scribbles over the rings. Nothing may trap, no
/// request may be given more than 64 KiB or more than its writable buffers hold, and no
/// action may cost more than the per-action budget.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioRng(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    guard let machine = try? TestMachine(memorySize: 4 << 20) else { return 0 }
    let options = ["queue-size=16", "queue-size=16,max-bytes=100,period=10", "queue-size=16,packed=on"][input.choose(3)]
    guard let rng = try? machine.add(VirtioRngDevice.self, options: options) else { return 0 }
    let driver = VirtioTestDriver(function: rng, machine: machine)
    let packed = options.hasSuffix("packed=on")
    let packedQueues = packed ? driver.bringUpPacked(queueCount: 1, size: 16) : []
    if !packed { driver.bringUp() }

    // Buffers point into a pool at 2 MiB, far above what the test allocator hands out
    // for rings (from 1 MiB, about 17 KiB per bring-up, so at most 300 KiB for the first
    // bring-up and `maxResets` more); they overlap, and reach up to 512 KiB past it.
    // Without the cap, enough resets walk the rings up into the pool, and the device's
    // writes there stand for the driver's.
    let maxResets = 16
    var resets = 0
    let pool = GuestAddress(2 << 20)
    var posted = PostedRequests(queueSize: 16)   // rate-limited requests wait on the ring
    var scribbled = false
    var steps = 0
    while !input.isExhausted && steps < 200 {
        steps += 1
        switch input.byte() % 8 {
        case 0, 1, 2, 3: // a request
            let (chain, coversRings) = VirtioFuzzChain.make(&input, pool: pool, readableUpTo: 24)
            if coversRings { scribbled = true }
            if packed {
                packedQueues.first?.addChain(chain)
            } else if let head = driver.queues[0]?.addChain(chain), !posted.post(head: head, chain) {
                scribbled = true
            }
            if input.byte() > 32 { driver.kick(0) }
        case 4:
            machine.runQueuedWork(limit: 100)
        case 5:
            machine.advance(nanoseconds: UInt64(input.integer(UInt32.self)))
        case 6:
            guard resets < maxResets else { continue }
            resets += 1
            driver.setStatus(0)
            posted.reset()
            if !packed { driver.bringUp() }
        default:
            scribbled = true
            try? machine.memory.writeBytes(input.bytes(upTo: 32), at: GuestAddress(UInt64(input.integer(UInt32.self)) % (4 << 20)))
        }
        if !packed, !scribbled {
            for used in driver.queues[0]?.takeUsed() ?? [] {
                let limit = min(posted.returned(used.id) ?? .max, 64 << 10)
                fuzzCheck(UInt64(used.length) <= limit, "request \(used.id) given \(used.length) bytes, at most \(limit)")
            }
        }
    }
    machine.runQueuedWork(limit: 1000)
    let meter = rng.function.cost
    fuzzCheck(meter.worst.fits(meter.budget), "one action cost \(meter.worst), budget \(meter.budget)")
    return 0
}
