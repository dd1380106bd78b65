#if canImport(Glibc)
import Glibc
#endif
import CFuzzShim
import FuzzSupport
import Logging
import VFIOUser
import VMMCore

/// Fuzz target: a vfio-user client is as hostile as a guest. Each input is a session of
/// messages (header fields, payload bytes, attached descriptors of every kind: eventfds,
/// sealed and unsealed memfds, pipes) fed to a served sample device. Every message must
/// get a well-formed reply or none (posted), never a trap; descriptors the server does
/// not keep are closed, and once the client is gone every descriptor and mapping it gave
/// is released.
nonisolated(unsafe) let loop = try! EPollEventLoop()
let registry = PCIDeviceRegistry([FuzzSampleDevice.self])
let quiet = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

func openDescriptors() -> Int {
    var n = 0
    guard let d = opendir("/proc/self/fd") else { return -1 }
    while readdir(d) != nil { n += 1 }
    closedir(d)
    return n
}

func descriptor(_ kind: UInt8) -> [Int32] {
    switch kind % 6 {
    case 1: return [cfuzz_eventfd()]
    case 2, 3: return [cfuzz_memfd(0x10000, kind % 6 == 2 ? 1 : 0)]
    case 4:
        var p: [Int32] = [0, 0]
        pipe(&p)
        close(p[0])
        return [p[1]]
    case 5: return (0 ..< 3).map { _ in cfuzz_eventfd() }
    default: return []
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVFIOUser(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    _ = loop // created lazily on first use: its epoll fd and eventfd are not a leak
    let baseline = openDescriptors()
    do {
        guard let spec = try? DeviceSpec.parse("fuzz-sample"),
              let device = try? ServedDevice(spec: spec, registry: registry, services: ServiceRegistry(), loop: loop, logger: quiet)
        else { return 0 }
        let session = Session(device: device, log: RateLimitedLogger(quiet))
        var id: UInt16 = 0
        if input.bool() { // most sessions start with VERSION so the rest is reachable
            let v: [UInt8] = [0, 0, 0, 0] + Array("{}".utf8) + [0]
            _ = session.respond(to: VFIOUserMessage(header: VFIOUserHeader(messageID: 0, command: 1, messageSize: 25, flags: []), payload: v))
        }
        var messages = 0
        while !input.isExhausted && messages < 64 {
            messages += 1
            id &+= 1
            let command = UInt16(input.choose(16))
            let flags = VFIOUserHeader.Flags(rawValue: UInt32(input.byte() & 0x31))
            let payload = input.bytes(upTo: 255)
            let fds = descriptor(input.byte())
            let header = VFIOUserHeader(messageID: id, command: command, messageSize: UInt32(16 + payload.count), flags: flags)
            let reply = session.respond(to: VFIOUserMessage(header: header, payload: payload, fds: fds))
            if let (h, p) = reply {
                fuzzCheck(h.messageID == id && h.command == command, "reply to \(id)/\(command) says \(h.messageID)/\(h.command)")
                fuzzCheck(h.messageSize == UInt32(16 + p.count), "reply size \(h.messageSize) for \(p.count) payload bytes")
                fuzzCheck(!h.flags.contains(.error) || h.error != 0, "error reply without an errno")
                fuzzCheck(h.flags.rawValue & 0xF == 1, "reply not marked as a reply")
            } else {
                fuzzCheck(flags.contains(.noReply) || flags.rawValue & 0xF != 0, "command \(command) got no reply")
            }
            fuzzCheck(device.memoryRegionCount <= ServedDevice.dmaRegionLimit, "more DMA regions than the limit")
        }
        device.shutdown()
    }
    fuzzCheck(openDescriptors() == baseline, "descriptors leaked: \(baseline) before, \(openDescriptors()) after")
    return 0
}
