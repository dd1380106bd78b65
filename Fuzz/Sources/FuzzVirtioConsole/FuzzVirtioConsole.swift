import FuzzSupport
import VMMCore
import VMMTestKit
import VirtioConsole

/// Fuzz target: a hostile driver of a virtio console (virtio 1.2 §5.3) whose output goes
/// to /dev/null or nowhere. The input chooses chains on the transmit and receive queues
/// (readable and writable buffers, lengths up to 256 KiB, buffers outside RAM), kicks,
/// resets and scribbles over the rings. Nothing may trap, a transmit chain always comes
/// back with length 0 (the device only reads it), and no action may cost more than the
/// per-action budget.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioConsole(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    guard let machine = try? TestMachine(memorySize: 4 << 20) else { return 0 }
    let options = ["queue-size=16", "queue-size=16,chardev=file:/dev/null", "queue-size=16,packed=on"][input.choose(3)]
    guard let console = try? machine.add(VirtioConsoleDevice.self, options: options) else { return 0 }
    let driver = VirtioTestDriver(function: console, machine: machine)
    let packed = options.hasSuffix("packed=on")
    let packedQueues = packed ? driver.bringUpPacked(queueCount: 2, size: 16) : []
    if !packed { driver.bringUp(queueCount: 2) }

    // Buffers point into a pool at 2 MiB, above the rings the test allocator hands out
    // from 1 MiB (about 17 KiB per bring-up, at most `maxResets` more); they overlap, and
    // reach up to 512 KiB past it.
    let maxResets = 16
    var resets = 0
    let pool = GuestAddress(2 << 20)
    var scribbled = false
    var steps = 0
    while !input.isExhausted && steps < 200 {
        steps += 1
        switch input.byte() % 6 {
        case 0, 1, 2: // a chain on one of the two queues
            let queue = input.choose(2)
            var chain: [(address: GuestAddress, length: UInt32, writable: Bool)] = []
            for _ in 0 ..< 1 + input.choose(3) {
                let length = input.bool() ? UInt32(input.byte()) : UInt32(input.integer(UInt16.self)) << 2
                let address = input.byte() < 24 ? GuestAddress(input.integer(UInt64.self))
                                                : GuestAddress(pool.raw + UInt64(input.integer(UInt16.self)) << 2)
                let writable = input.byte() > 128
                // A writable buffer anywhere in RAM may cover the rings themselves.
                if address.raw < pool.raw, writable { scribbled = true }
                chain.append((address, length, writable))
            }
            if packed { packedQueues[queue].addChain(chain) } else { _ = driver.queues[queue]?.addChain(chain) }
            if input.byte() > 32 { driver.kick(queue) }
        case 3:
            machine.runQueuedWork(limit: 100)
        case 4:
            guard resets < maxResets else { continue }
            resets += 1
            driver.setStatus(0)
            if !packed { driver.bringUp(queueCount: 2) }
        default:
            scribbled = true
            try? machine.memory.writeBytes(input.bytes(upTo: 32), at: GuestAddress(UInt64(input.integer(UInt32.self)) % (4 << 20)))
        }
        if !packed, !scribbled {
            for used in driver.queues[1]?.takeUsed() ?? [] {
                fuzzCheck(used.length == 0, "transmit chain \(used.id) came back with length \(used.length)")
            }
        }
    }
    machine.runQueuedWork(limit: 1000)
    let meter = console.function.cost
    fuzzCheck(meter.worst.fits(meter.budget), "one action cost \(meter.worst), budget \(meter.budget)")
    return 0
}
