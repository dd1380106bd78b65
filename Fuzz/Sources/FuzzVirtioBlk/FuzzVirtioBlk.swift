import FuzzSupport
import VMMBlock
import VMMCore
import VMMTestKit
import VirtioBlk

/// Fuzz target: virtio-blk requests from a hostile driver (virtio 1.2 §5.2). The device is
/// brought up the way Linux does it (the test kit's virtio driver), then the input
/// chooses chains — header type and sector, how header, data and status are split across
/// descriptors, buffers in and out of RAM, missing status bytes — kicks, backend errors
/// and held completions, resets, config writes and disk resizes. Nothing may trap, every
/// request must come back with a status the spec defines, and no action may cost more
/// than the per-action budget (issue 12).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioBlk(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let disk = InMemoryDisk(size: 64 << 10, geometry: BlockGeometry(size: 64 << 10, logicalBlockSize: input.bool() ? 512 : 4096,
                                                                    canDiscard: true, canWriteZeroes: true,
                                                                    queueLimit: 1 + Int(input.byte() % 8)))
    // The test allocator never frees: 200 steps of requests (under 6 KiB each) or of
    // bring-ups (about 17 KiB each) from 1 MiB stay under 5 MiB.
    let memorySize: UInt64 = 8 << 20
    guard let machine = try? TestMachine(memorySize: memorySize) else { return 0 }
    machine.disks.enqueue(disk)
    let options = ["disk=m,queue-size=16", "disk=m,queue-size=16,readonly=on", "disk=m,queue-size=16,num-queues=2",
                   "disk=m,queue-size=16,packed=on"][input.choose(4)]
    guard let blk = try? machine.add(VirtioBlkDevice.self, options: options) else { return 0 }
    let driver = VirtioTestDriver(function: blk, machine: machine)
    let packed = options.hasSuffix("packed=on")
    let queueCount = options.contains("num-queues=2") ? 2 : 1
    let packedQueues = packed ? driver.bringUpPacked(queueCount: 1, size: 16) : []
    if !packed { driver.bringUp(queueCount: queueCount) }

    var statuses: [GuestAddress] = []
    var scribbled = false
    var steps = 0
    while !input.isExhausted && steps < 200 {
        steps += 1
        switch input.byte() % 10 {
        case 0, 1, 2, 3: // a request
            let type: UInt32 = input.bool() ? [0, 1, 4, 8, 11, 13][input.choose(6)] : UInt32(input.byte())
            let sector = input.bool() ? UInt64(input.byte()) : input.integer(UInt64.self)
            var header = withUnsafeBytes(of: type.littleEndian) { Array($0) } + [0, 0, 0, 0] + withUnsafeBytes(of: sector.littleEndian) { Array($0) }
            if input.byte() < 16 { header = Array(header.prefix(Int(input.byte() % 16))) } // short header
            let payload = input.bytes(upTo: 48) + [UInt8](repeating: 0xA5, count: Int(input.byte() % 9) * 512)
            var chain: [(address: GuestAddress, length: UInt32, writable: Bool)] = []
            if input.bool() {
                chain.append((driver.buffer(header + payload), UInt32(header.count + payload.count), false))
            } else {
                chain.append((driver.buffer(header), UInt32(header.count), false))
                if !payload.isEmpty { chain.append((driver.buffer(payload), UInt32(payload.count), input.bool())) }
            }
            if input.byte() < 24 { // a buffer outside RAM
                chain.append((GuestAddress(input.integer(UInt64.self)), UInt32(input.integer(UInt16.self)), true))
            }
            if input.byte() > 16 { // usually a status byte, sometimes with room for a read before it
                let extra = Int(input.byte() % 4) * 512
                let status = driver.buffer([UInt8](repeating: 0xEE, count: extra + 1))
                chain.append((status, UInt32(extra + 1), true))
                statuses.append(GuestAddress(status.raw + UInt64(extra)))
            }
            let queue = input.choose(queueCount)
            if packed { packedQueues.first?.addChain(chain) } else { driver.queues[queue]?.addChain(chain) }
            if input.byte() > 32 { driver.kick(queue) }
        case 4:
            machine.runQueuedWork(limit: 100)
        case 5:
            input.bool() ? disk.hold() : disk.release()
        case 6:
            disk.failNext(with: [BlockResult.ioError(errno: 5), .unsupported, .ok][input.choose(3)])
        case 7:
            driver.writeConfig(UInt64(input.byte() % 64), [1, 2, 4][input.choose(3)], UInt64(input.integer(UInt32.self)))
        case 8:
            try? disk.resize(to: UInt64(input.integer(UInt16.self)) * 512)
        default:
            if input.byte() < 8 { driver.setStatus(0); if !packed { driver.bringUp(queueCount: queueCount) } }
            else { scribbled = true; try? machine.memory.writeBytes(input.bytes(upTo: 32), at: GuestAddress(UInt64(input.integer(UInt32.self)) % memorySize)) }
        }
    }
    disk.release()
    machine.runQueuedWork(limit: 1000)
    for s in statuses where !scribbled {
        let v = (try? machine.memory.readBytes(at: s, count: 1).first) ?? 0xEE
        fuzzCheck(v == 0xEE || v <= 2, "status byte \(v) is not OK, IOERR or UNSUPP")
    }
    let meter = blk.function.cost
    fuzzCheck(meter.worst.fits(meter.budget), "one action cost \(meter.worst), budget \(meter.budget)")
    return 0
}
