#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import VMMCore
import VMMTestKit
@testable import VirtioConsole

/// Fuzz target: a hostile driver of a virtio console (virtio 1.2 §5.3) whose port goes to
/// nowhere, /dev/null, or a Unix socket with a client that sends what the input says. The
/// input chooses chains on the transmit and receive queues (readable and writable buffers,
/// lengths up to 256 KiB, zero-length ones, buffers outside RAM), kicks, the client's
/// bytes and its leaving, turns of the loop, resets and scribbles over the rings. Nothing
/// may trap, a transmit chain always comes back with length 0 (the device only reads it),
/// no receive chain gets more than its writable bytes, and no action may cost more than
/// the per-action budget.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtioConsole(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    guard let machine = try? TestMachine(memorySize: 4 << 20) else { return 0 }
    let socketPath = "/tmp/swiftvmm-fuzz-console-\(getpid()).sock"
    let options = ["queue-size=16", "queue-size=16,chardev=file:/dev/null", "queue-size=16,packed=on",
                   "queue-size=16,chardev=socket:\(socketPath)"][input.choose(4)]
    guard let console = try? machine.add(VirtioConsoleDevice.self, options: options),
          let device = (console.function.device as? VirtioConsoleDevice)?.device else { return 0 }
    defer { console.function.lock.withLock { device.shutdown() } }
    // The client, taken as the loop would take it (the test machine's loop does not run).
    var client: Int32 = -1
    if options.contains("socket:") {
        client = connectClient(socketPath)
        device.channel.accept()
    }
    defer { if client >= 0 { close(client) } }
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
    var posted = PostedRequests(queueSize: 16)   // receive chains wait for the client's bytes
    var steps = 0
    while !input.isExhausted && steps < 200 {
        steps += 1
        switch input.byte() % 8 {
        case 0, 1, 2: // a chain on one of the two queues
            let queue = input.choose(2)
            let (chain, coversRings) = VirtioFuzzChain.make(&input, pool: pool, readableUpTo: 128)
            if coversRings { scribbled = true }
            if packed {
                packedQueues[queue].addChain(chain)
            } else if let head = driver.queues[queue]?.addChain(chain), queue == 0, !posted.post(head: head, chain) {
                scribbled = true
            }
            if input.byte() > 32 { driver.kick(queue) }
        case 3:
            machine.runQueuedWork(limit: 100)
        case 6: // the client sends, or leaves
            if input.byte() < 16, client >= 0 {
                close(client)
                client = -1
            } else if client >= 0 {
                let bytes = input.bytes(upTo: 512)
                _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            }
        case 7: // a turn of the loop with the client readable
            console.function.lock.withLock { device.channel.inputReady() }
        case 4:
            guard resets < maxResets else { continue }
            resets += 1
            driver.setStatus(0)
            posted.reset()
            if !packed { driver.bringUp(queueCount: 2) }
        default:
            scribbled = true
            try? machine.memory.writeBytes(input.bytes(upTo: 32), at: GuestAddress(UInt64(input.integer(UInt32.self)) % (4 << 20)))
        }
        if !packed, !scribbled {
            for used in driver.queues[1]?.takeUsed() ?? [] {
                fuzzCheck(used.length == 0, "transmit chain \(used.id) came back with length \(used.length)")
            }
            for used in driver.queues[0]?.takeUsed() ?? [] {
                let room = posted.returned(used.id) ?? .max
                fuzzCheck(UInt64(used.length) <= min(room, 64 << 10), "receive chain \(used.id) given \(used.length) bytes, room \(room)")
            }
        }
    }
    machine.runQueuedWork(limit: 1000)
    let meter = console.function.cost
    fuzzCheck(meter.worst.fits(meter.budget), "one action cost \(meter.worst), budget \(meter.budget)")
    return 0
}

/// A connected, non-blocking client of the console's socket.
private func connectClient(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return -1 }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { close(fd); return -1 }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { close(fd); return -1 }
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}
