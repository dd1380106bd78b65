import VMMCore

/// Transmit descriptor layouts (Intel 8254x SDM §3.3): the legacy descriptor, and the
/// extended TCP/IP context and data descriptors. Each is 16 bytes, read as two
/// little-endian quadwords (`low` at +0, `high` at +8).
enum Transmit {
    /// The largest packet assembled from data descriptors: a 64 KiB TSO payload and
    /// headers fit with room to spare; larger ones are dropped and counted.
    static let maxPacketLength = 256 << 10
    /// Without TSO a packet is at most 16,288 bytes: §3.3.3 (Table 3-9) allows "16288
    /// bytes total", the largest transmit packet (the FIFO's); a larger one is dropped.
    static let maxPacketLengthWithoutTSO = 16_288
    static let minimumFrameLength = 60
    /// Bytes of a packet copied into the device's buffer when a path reads or rewrites
    /// its headers (TransmitAssembly.swift, `copyHead`): every header TSO rewrites lies
    /// within them, since HDRLEN is 8 bits (§3.3.6). A checksum range or field reaching
    /// past them sends the packet the software way, copied whole.
    static let headLength = 256
    /// Buffers kept in guest memory per packet; a packet of more buffers is copied as it
    /// grows, so the scatter list the backend gets stays this short.
    static let maxPieces = TransmitPieces.Storage.count

    // CMD / DCMD / TUCMD bits (§3.3.3, §3.3.6, §3.3.7).
    static let endOfPacket: UInt8 = 0x01
    static let insertChecksum: UInt8 = 0x04     // legacy IC
    static let segmentation: UInt8 = 0x04       // extended TSE
    static let reportStatus: UInt8 = 0x08
    static let extended: UInt8 = 0x20           // DEXT
    static let vlanEnable: UInt8 = 0x40         // VLE
    /// In PHY or MAC loopback a TSO packet's segments are also received, inside the TDT
    /// write that sent them. A packet of more segments is lost whole, as from an overrun
    /// receive FIFO, before any is built, so that one write stays within
    /// `ActionCostMeter.defaultBudget` in frames and in work (a 256 KiB packet at MSS 8
    /// would otherwise build and receive 32,768 frames on top of sending them). Linux
    /// never loops TSO back: its ethtool test sends plain frames.
    static let loopbackSegmentLimit = ActionCostMeter.deferAt.frames
    static let interruptDelay: UInt8 = 0x80     // IDE
    static let statusDone: UInt8 = 0x01         // DD, in byte 12 of every layout

    // TUCMD (context) and POPTS (data).
    static let contextTCP: UInt8 = 0x01
    static let contextIPv4: UInt8 = 0x02
    static let insertIPChecksum: UInt8 = 0x01   // IXSM
    static let insertTransportChecksum: UInt8 = 0x02 // TXSM

    enum Kind { case legacy, context, data, invalid }

    static func kind(high: UInt64) -> Kind {
        let command = UInt8(truncatingIfNeeded: high >> 24)
        guard command & extended != 0 else { return .legacy }
        switch (high >> 20) & 0xF {
        case 0: return .context
        case 1: return .data
        default: return .invalid
        }
    }

    static func command(high: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: high >> 24) }
    static func special(high: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: high >> 48) }
    /// Legacy: 16-bit length; data: 20-bit DTALEN.
    static func length(high: UInt64, kind: Kind) -> Int { Int(high & (kind == .legacy ? 0xFFFF : 0xF_FFFF)) }
    static func dataOptions(high: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: high >> 40) }
    static func legacyChecksumOffset(high: UInt64) -> Int { Int((high >> 16) & 0xFF) }
    static func legacyChecksumStart(high: UInt64) -> Int { Int((high >> 40) & 0xFF) }
}

/// The TCP/IP context descriptor's fields (§3.3.6), kept until the next context descriptor.
struct TransmitContext {
    var ipStart = 0, ipField = 0, ipEnd = 0           // IPCSS, IPCSO, IPCSE (0 = to the end)
    var transportStart = 0, transportField = 0, transportEnd = 0   // TUCSS, TUCSO, TUCSE
    var payloadLength = 0                               // PAYLEN (informational: the data decides)
    var isTCP = false, isIPv4 = false
    var headerLength = 0                                // HDRLEN
    var segmentSize = 0                                 // MSS
    var loaded = false

    init() {}

    init(low: UInt64, high: UInt64) {
        ipStart = Int(low & 0xFF)
        ipField = Int((low >> 8) & 0xFF)
        ipEnd = Int((low >> 16) & 0xFFFF)
        transportStart = Int((low >> 32) & 0xFF)
        transportField = Int((low >> 40) & 0xFF)
        transportEnd = Int((low >> 48) & 0xFFFF)
        payloadLength = Int(high & 0xF_FFFF)
        let command = Transmit.command(high: high)
        isTCP = command & Transmit.contextTCP != 0
        isIPv4 = command & Transmit.contextIPv4 != 0
        headerLength = Int((high >> 40) & 0xFF)
        segmentSize = Int((high >> 48) & 0xFFFF)
        loaded = true
    }

    /// An end field of 0 means "to the end of the packet"; otherwise it is inclusive.
    static func end(_ field: Int, length: Int) -> Int { field == 0 ? length : field + 1 }
}

/// A packet's buffer not copied into the device's buffer, read from guest memory only
/// when it goes out. Its last byte lies below 2^64 (`append` checks).
struct TransmitPiece {
    var address: GuestAddress
    var length: Int
}

/// A packet's pieces, held inline: adding and clearing them per packet costs no array
/// upkeep (no uniqueness check, no release). Pieces taken off the front by `dropFront`
/// (a head copied into the device's buffer) leave their slots unused until `removeAll`.
struct TransmitPieces {
    typealias Storage = InlineArray<64, TransmitPiece>
    private var storage = Storage(repeating: TransmitPiece(address: GuestAddress(0), length: 0))
    private var start = 0
    private var end = 0

    var count: Int { end - start }
    var isEmpty: Bool { start == end }
    var first: TransmitPiece? { isEmpty ? nil : storage[start] }
    /// A piece that starts where the last one ends extends it (Linux's e1000_tx_map splits
    /// a linear buffer at 4 KiB, E1000_MAX_DATA_PER_TXD): one host view, one iovec,
    /// instead of one per descriptor. False, and nothing added, when full.
    mutating func append(_ piece: TransmitPiece) -> Bool {
        if end > start, let last = storage[end - 1].address.checkedAdd(UInt64(storage[end - 1].length)), last == piece.address {
            storage[end - 1].length += piece.length   // both within Transmit.maxPacketLength
            return true
        }
        guard end < Storage.count else { return false }
        storage[end] = piece
        end += 1
        return true
    }
    /// Takes `bytes` (at most the first piece's length) off the front of the first piece,
    /// and the piece itself when nothing of it is left.
    mutating func dropFront(bytes: Int) {
        guard start < end, bytes > 0 else { return }
        let piece = storage[start]
        guard bytes < piece.length, let rest = piece.address.checkedAdd(UInt64(bytes)) else {
            start += 1
            return
        }
        storage[start] = TransmitPiece(address: rest, length: piece.length - bytes)
    }
    mutating func removeAll() { start = 0; end = 0 }
    subscript(index: Int) -> TransmitPiece { storage[start + index] }
}

/// The packet being assembled from descriptors, across TDT writes if need be.
struct TransmitState {
    var context = TransmitContext()
    /// Bytes of the packet so far: the first `copied` in the device's transmit buffer
    /// (none until a path needs the headers, or the pieces ran out), the rest in
    /// `pieces`, in order.
    var length = 0
    var copied = 0
    var pieces = TransmitPieces()
    var inProgress = false
    /// The packet outgrew `Transmit.maxPacketLength`: dropped at EOP.
    var overflowed = false
    /// A buffer was not RAM: dropped at EOP.
    var unreadable = false
    /// From the packet's first data descriptor: TSE and POPTS (§3.3.7).
    var segmentation = false
    var options: UInt8 = 0
    /// The packet's first descriptor's upper half: where a legacy packet's CSS is read
    /// (§3.3.3: "CSS must be set in the first descriptor of the packet") and, with TSE, VLE
    /// and the VLAN tag (§3.3.7.1: valid only in the first data descriptor).
    var firstHigh: UInt64 = 0
    /// Descriptors of any kind consumed while this packet is open: one that laps the ring
    /// is dropped. Saturates at the ring size, the most it needs to tell.
    var descriptorCount: UInt32 = 0
    /// Descriptors with RS waiting for their packet to go out before DD is written: at
    /// most one ring's worth, since every descriptor of an open packet counts above.
    var pendingWriteBacks: [GuestAddress] = []
    var pendingDelayed = true

    init() { pendingWriteBacks.reserveCapacity(64) }

    /// Device reset: back to power-on, with the write-back list's storage released.
    mutating func reset() {
        context = TransmitContext()
        endPacket()
        pendingWriteBacks = []
        pendingWriteBacks.reserveCapacity(64)
        pendingDelayed = true
    }

    mutating func endPacket() {
        length = 0; copied = 0; inProgress = false; overflowed = false; unreadable = false; descriptorCount = 0
        pieces.removeAll()
        segmentation = false; options = 0; firstHigh = 0
    }
}
