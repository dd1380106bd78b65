#if canImport(Glibc)
import Glibc
#endif

/// The commands of vfio-user 0.1 (QEMU docs/interop/vfio-user.rst, "Commands").
public enum VFIOUserCommand: UInt16, Sendable, CaseIterable {
    case version = 1
    case dmaMap = 2
    case dmaUnmap = 3
    case deviceGetInfo = 4
    case deviceGetRegionInfo = 5
    case deviceGetRegionIOFDs = 6
    case deviceGetIRQInfo = 7
    case deviceSetIRQs = 8
    case regionRead = 9
    case regionWrite = 10
    case dmaRead = 11
    case dmaWrite = 12
    case deviceReset = 13
}

/// The 16-byte header in front of every message ("Header"): message ID, command,
/// total size including the header, flags, and an errno in error replies.
public struct VFIOUserHeader: Equatable, Sendable {
    public static let size = 16

    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Bits 0–3 are the message type: 0 = command, 1 = reply.
        public static let typeMask: UInt32 = 0xF
        public static let reply = Flags(rawValue: 1)
        /// The sender expects no reply (a posted write).
        public static let noReply = Flags(rawValue: 1 << 4)
        /// A reply that failed; `error` holds the errno.
        public static let error = Flags(rawValue: 1 << 5)
    }

    public var messageID: UInt16
    public var command: UInt16
    public var messageSize: UInt32
    public var flags: Flags
    public var error: UInt32

    public init(messageID: UInt16, command: UInt16, messageSize: UInt32, flags: Flags, error: UInt32 = 0) {
        self.messageID = messageID; self.command = command; self.messageSize = messageSize
        self.flags = flags; self.error = error
    }

    public var isCommand: Bool { flags.rawValue & Flags.typeMask == 0 }

    /// Decodes the first 16 bytes of `bytes`.
    public static func decode(_ bytes: [UInt8]) throws(VFIOUserError) -> VFIOUserHeader {
        var r = WireReader(bytes)
        let id = try r.u16(), command = try r.u16(), size = try r.u32(), flags = try r.u32(), error = try r.u32()
        return VFIOUserHeader(messageID: id, command: command, messageSize: size, flags: Flags(rawValue: flags), error: error)
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: Self.size)
        w.u16(messageID); w.u16(command); w.u32(messageSize); w.u32(flags.rawValue); w.u32(error)
        return w.bytes
    }
}

/// What is wrong with a client's message. Every case becomes an error reply with an
/// errno (`errno`) and the server goes on; only `framing` ends the connection, because
/// after it the byte stream cannot be trusted to be at a message boundary.
public enum VFIOUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The header's size is below 16 or above what the server announced.
    case framing(String)
    /// A field is missing or inconsistent (EINVAL).
    case malformed(String)
    /// A command or variant this server does not implement (ENOTSUP).
    case unsupported(String)
    /// A region index, offset or IRQ range outside what the device has (EINVAL).
    case outOfRange(String)
    /// A resource limit was reached (ENOSPC).
    case limit(String)
    /// The request names something that is not there, such as a DMA region (ENOENT).
    case notFound(String)
    /// The system refused (the errno it gave).
    case system(String, errno: Int32)

    public var errno: Int32 {
        switch self {
        case .framing: EPROTO
        case .malformed, .outOfRange: EINVAL
        case .unsupported: ENOTSUP
        case .limit: ENOSPC
        case .notFound: ENOENT
        case let .system(_, e): e
        }
    }

    public var description: String {
        switch self {
        case let .framing(m), let .malformed(m), let .unsupported(m), let .outOfRange(m), let .limit(m), let .notFound(m): m
        case let .system(m, e): "\(m): \(String(cString: strerror(e)))"
        }
    }
}
