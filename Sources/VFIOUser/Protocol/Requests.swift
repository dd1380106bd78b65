/// The server-side view of every client command, decoded and checked for shape (sizes,
/// field presence, flag combinations). Semantic checks against the device (does region
/// 3 exist, is this IRQ range valid) are the session's job.
///
/// Layouts: QEMU docs/interop/vfio-user.rst; the structs mirror Linux's
/// `include/uapi/linux/vfio.h` (`vfio_device_info`, `vfio_region_info`, `vfio_irq_info`,
/// `vfio_irq_set`), prefixed by `argsz`.
public enum VFIOUserRequest: Equatable, Sendable {
    /// Major, minor, and the client's JSON capabilities (not needed by this server).
    case version(major: UInt16, minor: UInt16)
    case dmaMap(DMAMap)
    case dmaUnmap(DMAUnmap)
    case deviceGetInfo(argsz: UInt32)
    case regionInfo(argsz: UInt32, index: UInt32)
    case irqInfo(argsz: UInt32, index: UInt32)
    case setIRQs(SetIRQs)
    case regionRead(RegionAccess)
    case regionWrite(RegionAccess, data: [UInt8])
    case deviceReset

    public struct DMAMap: Equatable, Sendable {
        public static let readable: UInt32 = 1 << 0, writable: UInt32 = 1 << 1
        public var flags: UInt32
        /// Offset of the region in the file descriptor that comes with the message.
        public var fileOffset: UInt64
        public var address: UInt64
        public var size: UInt64
    }

    public struct DMAUnmap: Equatable, Sendable {
        public static let getDirtyBitmap: UInt32 = 1 << 0, all: UInt32 = 1 << 1
        public var argsz: UInt32
        public var flags: UInt32
        public var address: UInt64
        public var size: UInt64
        public var unmapsAll: Bool { flags & Self.all != 0 }
    }

    public struct SetIRQs: Equatable, Sendable {
        // vfio.h VFIO_IRQ_SET_*
        public static let dataNone: UInt32 = 1 << 0, dataBool: UInt32 = 1 << 1, dataEventFD: UInt32 = 1 << 2
        public static let actionMask: UInt32 = 1 << 3, actionUnmask: UInt32 = 1 << 4, actionTrigger: UInt32 = 1 << 5
        public enum Data: Equatable, Sendable { case none, bools([Bool]), eventFDs }
        public enum Action: Equatable, Sendable { case mask, unmask, trigger }
        public var index: UInt32
        public var start: UInt32
        public var count: UInt32
        public var data: Data
        public var action: Action
    }

    public struct RegionAccess: Equatable, Sendable {
        public var offset: UInt64
        public var region: UInt32
        public var count: UInt32
    }

    /// Decodes a command's payload (the bytes after the header).
    /// - Parameter maxTransfer: the largest REGION_READ/WRITE the server announced.
    public static func decode(command: UInt16, payload: [UInt8], fdCount: Int,
                              maxTransfer: Int) throws(VFIOUserError) -> VFIOUserRequest {
        guard let c = VFIOUserCommand(rawValue: command) else { throw .unsupported("unknown command \(command)") }
        var r = WireReader(payload)
        switch c {
        case .version:
            let major = try r.u16(), minor = try r.u16()
            return .version(major: major, minor: minor)
        case .dmaMap:
            let argsz = try r.u32(), flags = try r.u32()
            let m = DMAMap(flags: flags, fileOffset: try r.u64(), address: try r.u64(), size: try r.u64())
            guard argsz >= 32 else { throw .malformed("DMA_MAP argsz \(argsz) is below 32") }
            guard flags & ~(DMAMap.readable | DMAMap.writable) == 0 else { throw .malformed("DMA_MAP flags 0x\(String(flags, radix: 16))") }
            guard fdCount <= 1 else { throw .malformed("DMA_MAP with \(fdCount) file descriptors") }
            return .dmaMap(m)
        case .dmaUnmap:
            let u = DMAUnmap(argsz: try r.u32(), flags: try r.u32(), address: try r.u64(), size: try r.u64())
            guard u.argsz >= 24 else { throw .malformed("DMA_UNMAP argsz \(u.argsz) is below 24") }
            guard u.flags & DMAUnmap.getDirtyBitmap == 0 else { throw .unsupported("DMA_UNMAP with a dirty bitmap (no migration)") }
            guard u.flags & ~DMAUnmap.all == 0 else { throw .malformed("DMA_UNMAP flags 0x\(String(u.flags, radix: 16))") }
            if u.unmapsAll && (u.address != 0 || u.size != 0) { throw .malformed("DMA_UNMAP of everything with an address or size") }
            return .dmaUnmap(u)
        case .deviceGetInfo:
            return .deviceGetInfo(argsz: try r.u32())
        case .deviceGetRegionInfo:
            let argsz = try r.u32(); _ = try r.u32()
            return .regionInfo(argsz: argsz, index: try r.u32())
        case .deviceGetIRQInfo:
            let argsz = try r.u32(); _ = try r.u32()
            return .irqInfo(argsz: argsz, index: try r.u32())
        case .deviceSetIRQs:
            return .setIRQs(try decodeSetIRQs(&r, fdCount: fdCount))
        case .regionRead:
            let a = RegionAccess(offset: try r.u64(), region: try r.u32(), count: try r.u32())
            guard a.count <= maxTransfer else { throw .malformed("REGION_READ of \(a.count) bytes exceeds \(maxTransfer)") }
            return .regionRead(a)
        case .regionWrite:
            let a = RegionAccess(offset: try r.u64(), region: try r.u32(), count: try r.u32())
            guard a.count <= maxTransfer else { throw .malformed("REGION_WRITE of \(a.count) bytes exceeds \(maxTransfer)") }
            let data = Array(try r.bytes(Int(a.count)))
            guard r.remaining == 0 else { throw .malformed("REGION_WRITE of \(a.count) bytes carries \(a.count + UInt32(clamping: r.remaining))") }
            return .regionWrite(a, data: data)
        case .deviceReset:
            return .deviceReset
        case .deviceGetRegionIOFDs:
            throw .unsupported("DEVICE_GET_REGION_IO_FDS: no region ioeventfds")
        case .dmaRead, .dmaWrite:
            throw .unsupported("DMA_READ/DMA_WRITE are server-to-client messages")
        }
    }

    private static func decodeSetIRQs(_ r: inout WireReader, fdCount: Int) throws(VFIOUserError) -> SetIRQs {
        let argsz = try r.u32(), flags = try r.u32(), index = try r.u32(), start = try r.u32(), count = try r.u32()
        guard argsz >= 20 else { throw .malformed("SET_IRQS argsz \(argsz) is below 20") }
        let dataBits = flags & (SetIRQs.dataNone | SetIRQs.dataBool | SetIRQs.dataEventFD)
        let actionBits = flags & (SetIRQs.actionMask | SetIRQs.actionUnmask | SetIRQs.actionTrigger)
        guard flags & ~(dataBits | actionBits) == 0, dataBits.nonzeroBitCount == 1, actionBits.nonzeroBitCount == 1 else {
            throw .malformed("SET_IRQS flags 0x\(String(flags, radix: 16)): need one data type and one action")
        }
        let action: SetIRQs.Action = actionBits == SetIRQs.actionMask ? .mask : (actionBits == SetIRQs.actionUnmask ? .unmask : .trigger)
        let data: SetIRQs.Data
        switch dataBits {
        case SetIRQs.dataNone:
            guard fdCount == 0 else { throw .malformed("SET_IRQS without data carries \(fdCount) file descriptors") }
            data = .none
        case SetIRQs.dataBool:
            guard fdCount == 0 else { throw .malformed("SET_IRQS with booleans carries \(fdCount) file descriptors") }
            guard Int(count) == r.remaining else { throw .malformed("SET_IRQS declares \(count) booleans, carries \(r.remaining)") }
            data = .bools(try r.bytes(Int(count)).map { $0 != 0 })
        default:
            // One descriptor per vector; none at all means "tear these vectors down".
            guard fdCount == 0 || fdCount == Int(count) else {
                throw .malformed("SET_IRQS for \(count) vectors carries \(fdCount) file descriptors")
            }
            data = .eventFDs
        }
        return SetIRQs(index: index, start: start, count: count, data: data, action: action)
    }
}
