#if canImport(Glibc)
import Glibc
#endif
import Logging
import VMMCore

/// One client's conversation with a served device: version negotiation first, then
/// commands answered in order. A bad command gets an error reply with an errno and the
/// session goes on; a broken stream (bad framing) ends it in the connection.
///
/// `respond(to:)` is the whole protocol, apart from the socket: the server's loop and the
/// fuzz target both feed it messages.
public final class Session {
    // vfio-user 0.1 ("Version").
    static let major: UInt16 = 0, minor: UInt16 = 1
    static let maxFDsPerMessage = 16
    /// REGION_READ/WRITE payloads announced as `max_data_xfer_size`.
    static let maxDataTransfer = ServedDevice.maxAccessBytes
    /// The largest message accepted: a REGION_WRITE of the largest transfer, or a
    /// VERSION with a generous capabilities string.
    static let maxMessageSize = VFIOUserHeader.size + 16 + 64 * 1024

    private let device: ServedDevice
    private let log: RateLimitedLogger
    private var negotiated = false
    /// Set by a VERSION this server cannot speak: the session ends after the reply, as
    /// the spec says ("the server closes the connection").
    private var endAfterReply = false
    /// Messages answered, by outcome (for tests and logs).
    public private(set) var handled = 0, failed = 0

    public init(device: ServedDevice, log: RateLimitedLogger) {
        self.device = device; self.log = log
    }

    /// Serves `connection` until the client leaves or the server stops; returns why, if
    /// not a plain hang-up.
    func run(on connection: VFIOUserConnection) -> String? {
        while true {
            switch connection.receive() {
            case let .closed(why): return why?.isEmpty == true ? nil : why
            case let .message(m):
                guard let (header, payload) = respond(to: m) else { continue }
                guard connection.send(header, payload: payload) else { return "client stopped reading replies" }
                if endAfterReply { return "the client's vfio-user version is not this server's" }
            }
        }
    }

    /// Handles one message and returns the reply to send, if any (none for replies the
    /// client sent and for posted commands). Takes over the message's descriptors.
    public func respond(to m: VFIOUserMessage) -> (VFIOUserHeader, [UInt8])? {
        guard m.header.isCommand else {
            DescriptorCloser.shared.close(m.fds)
            log.warning("vfio-user.unexpected-reply", "\(device.name): client sent a reply (id \(m.header.messageID)); ignored")
            return nil
        }
        let outcome = handle(m)
        var reply = VFIOUserHeader(messageID: m.header.messageID, command: m.header.command, messageSize: 0, flags: .reply)
        var payload: [UInt8] = []
        switch outcome {
        case let .success(p):
            payload = p
            handled &+= 1
        case let .failure(e):
            reply.flags.insert(.error)
            reply.error = UInt32(e.errno)
            failed &+= 1
            log.warning("vfio-user.bad-message", "\(device.name): command \(m.header.command) refused: \(e)")
        }
        if m.header.flags.contains(.noReply) { return nil }
        reply.messageSize = UInt32(VFIOUserHeader.size + payload.count)
        return (reply, payload)
    }

    private func handle(_ m: VFIOUserMessage) -> Result<[UInt8], VFIOUserError> {
        var fds = m.fds
        defer { DescriptorCloser.shared.close(fds) } // whatever a handler did not take
        do {
            let request = try VFIOUserRequest.decode(command: m.header.command, payload: m.payload, fdCount: fds.count,
                                                     maxTransfer: Self.maxDataTransfer)
            if case .version = request {} else if !negotiated {
                throw VFIOUserError.malformed("command \(m.header.command) before VERSION")
            }
            return .success(try execute(request, fds: &fds))
        } catch let e as VFIOUserError {
            return .failure(e)
        } catch {
            return .failure(.malformed("\(error)"))
        }
    }

    private func execute(_ request: VFIOUserRequest, fds: inout [Int32]) throws(VFIOUserError) -> [UInt8] {
        var w = WireWriter()
        switch request {
        case let .version(major, minor):
            guard !negotiated else { throw .malformed("VERSION again: the version is negotiated once per connection") }
            guard major == Self.major else {
                endAfterReply = true
                throw .unsupported("vfio-user major version \(major) (this server speaks \(Self.major))")
            }
            negotiated = true
            // Answer with the lower minor: QEMU 10.2 speaks 0.0 and refuses a higher one
            // (hw/vfio-user/proxy.c vfio_user_validate_version).
            w.u16(Self.major); w.u16(min(minor, Self.minor))
            let caps = "{\"capabilities\":{\"max_msg_fds\":\(Self.maxFDsPerMessage),\"max_data_xfer_size\":\(Self.maxDataTransfer),"
                + "\"max_dma_maps\":\(ServedDevice.dmaRegionLimit),\"pgsizes\":4096}}"
            w.append(caps.utf8); w.append([0])

        case let .dmaMap(map):
            let fd = fds.first
            fds.removeAll() // DMAMappings owns it now
            try device.dma.map(map, fd: fd)

        case let .dmaUnmap(u):
            try device.dma.unmap(u)
            w.u32(24); w.u32(u.flags); w.u64(u.address); w.u64(u.size)

        case let .deviceGetInfo(argsz):
            guard argsz >= 16 else { throw .malformed("DEVICE_GET_INFO argsz \(argsz) is below 16") }
            // vfio.h: VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI; VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS.
            w.u32(16); w.u32(1 << 0 | 1 << 1); w.u32(ServedDevice.regionCount); w.u32(UInt32(EventFDInterrupts.Index.allCases.count))

        case let .regionInfo(argsz, index):
            guard argsz >= 32 else { throw .malformed("DEVICE_GET_REGION_INFO argsz \(argsz) is below 32") }
            guard index < ServedDevice.regionCount else { throw .outOfRange("region \(index) (0-8)") }
            let size = device.regionSize(index)
            // VFIO_REGION_INFO_FLAG_READ | _WRITE; no mmap: every access is a message.
            w.u32(32); w.u32(size > 0 ? 0x3 : 0); w.u32(index); w.u32(0); w.u64(size); w.u64(0)

        case let .irqInfo(argsz, index):
            guard argsz >= 16 else { throw .malformed("DEVICE_GET_IRQ_INFO argsz \(argsz) is below 16") }
            guard let i = EventFDInterrupts.Index(rawValue: index) else { throw .outOfRange("IRQ index \(index) (0-4)") }
            let count = device.interrupts.vectorCounts[Int(i.rawValue)]
            // VFIO_IRQ_INFO_EVENTFD, plus MASKABLE | AUTOMASKED for INTx, NORESIZE for messages.
            let flags: UInt32 = i == .intx ? 0x1 | 0x2 | 0x4 : 0x1 | 0x8
            w.u32(16); w.u32(count > 0 ? flags : 0); w.u32(index); w.u32(UInt32(count))

        case let .setIRQs(set):
            let taken = fds
            fds.removeAll()
            try device.interrupts.apply(set, fds: taken)

        case let .regionRead(a):
            let data = try device.read(region: a.region, offset: a.offset, count: Int(a.count))
            w.u64(a.offset); w.u32(a.region); w.u32(a.count); w.append(data)

        case let .regionWrite(a, data):
            try device.write(region: a.region, offset: a.offset, data: data)
            w.u64(a.offset); w.u32(a.region); w.u32(a.count)

        case .deviceReset:
            device.resetDevice()
        }
        return w.bytes
    }
}
