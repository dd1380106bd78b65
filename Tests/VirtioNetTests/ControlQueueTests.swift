import Synchronization
import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

extension VirtioNetDriver {
    /// Sends one control command (§5.1.6.5) as Linux's virtnet_send_command does: header,
    /// data, and a 1-byte writable ack; returns the ack (0 OK, 1 ERR).
    func control(_ cls: UInt8, _ cmd: UInt8, _ data: [UInt8], queue: Int = 2) -> UInt8? {
        let ack = machine.allocator.alloc(size: 1)
        try? machine.memory.store(UInt8(0xAA), at: ack)
        var chain: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(buffer([cls, cmd]), 2, false)]
        if !data.isEmpty { chain.append((buffer(data), UInt32(data.count), false)) }
        chain.append((ack, 1, true))
        queues[queue]?.addChain(chain)
        kick(queue)
        guard queues[queue]?.takeUsed().first?.length == 1 else { return nil }
        return try? machine.memory.load(UInt8.self, at: ack)
    }

    func macTable(_ uni: [[UInt8]], _ multi: [[UInt8]]) -> [UInt8] {
        func le32(_ n: Int) -> [UInt8] { [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)] }
        return le32(uni.count) + uni.flatMap { $0 } + le32(multi.count) + multi.flatMap { $0 }
    }
}

@Suite("virtio-net control queue")
struct ControlQueueTests {
    static let other: [UInt8] = [0x52, 0x54, 0x00, 0x99, 0x99, 0x99]
    static let multicast: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB]
    static let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    /// Injects a frame to `dst`; true when it reached the guest.
    func delivered(_ d: VirtioNetDriver, to dst: [UInt8]) -> Bool {
        let before = d.queues[0]?.usedIndex ?? 0
        d.endpoint.inject(FrameBuilder.virtioNet.addressed(to: dst).ethernet(payload: [1, 2, 3]))
        return d.queues[0]?.usedIndex != before
    }

    func ready() throws -> VirtioNetDriver {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3)
        d.postReceiveBuffers(64)
        return d
    }

    @Test func promiscuousByDefaultThenFiltered() throws {
        let d = try ready()
        #expect(delivered(d, to: Self.other)) // power-on: promiscuous, as QEMU
        #expect(d.control(0, 0, [0]) == 0)    // PROMISC off
        #expect(!delivered(d, to: Self.other))
        #expect(delivered(d, to: FrameBuilder.virtioNet.destinationMAC))
        #expect(delivered(d, to: Self.broadcast))
        #expect(!delivered(d, to: Self.multicast))
        #expect(d.device?.counters.drops(.filtered) == 2)
        #expect(d.control(0, 1, [1]) == 0)    // ALLMULTI on
        #expect(delivered(d, to: Self.multicast))
        #expect(d.control(0, 5, [1]) == 0)    // NOBCAST (CTRL_RX_EXTRA)
        #expect(!delivered(d, to: Self.broadcast))
        #expect(d.control(0, 2, [1]) == 0)    // ALLUNI
        #expect(delivered(d, to: Self.other))
        #expect(d.control(0, 4, [1]) == 0)    // NOUNI beats everything unicast but promisc
        #expect(!delivered(d, to: FrameBuilder.virtioNet.destinationMAC))
        #expect(d.control(0, 0, [1]) == 0)
        #expect(delivered(d, to: FrameBuilder.virtioNet.destinationMAC))
    }

    @Test func macTableFilter() throws {
        let d = try ready()
        #expect(d.control(0, 0, [0]) == 0)
        let extraMulticast: [UInt8] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]
        #expect(d.control(1, 0, d.macTable([Self.other], [extraMulticast])) == 0)
        #expect(delivered(d, to: Self.other))
        #expect(delivered(d, to: extraMulticast))
        #expect(!delivered(d, to: Self.multicast))
        #expect(delivered(d, to: FrameBuilder.virtioNet.destinationMAC))
        // An empty table removes them again.
        #expect(d.control(1, 0, d.macTable([], [])) == 0)
        #expect(!delivered(d, to: Self.other))
        // More entries than the table holds: all of that kind are accepted.
        let many = (0 ..< 65).map { [0x02, 0, 0, 0, 1, UInt8($0)] as [UInt8] }
        #expect(d.control(1, 0, d.macTable(many, [])) == 0)
        #expect(delivered(d, to: Self.other))
        // Malformed tables: wrong counts, trailing bytes, truncated.
        #expect(d.control(1, 0, [5, 0, 0, 0] + Self.other) == 1)
        #expect(d.control(1, 0, d.macTable([], []) + [0]) == 1)
        #expect(d.control(1, 0, [0xFF, 0xFF, 0xFF, 0xFF]) == 1)
        #expect(d.control(1, 0, []) == 1)
    }

    /// Linux sends every address the interface has (`virtnet_set_rx_mode`, no cap): a
    /// table of 2,100 multicast addresses, longer than any command the device copies, is
    /// read in place and puts multicast into overflow (accept all), as in QEMU; the
    /// unicast table beside it is kept. It was answered ERR, leaving the new groups filtered.
    @Test func aMACTableOfThousandsOfAddressesOverflows() throws {
        let d = try ready()
        #expect(d.control(0, 0, [0]) == 0)   // promiscuous off: the tables decide
        #expect(!delivered(d, to: Self.multicast))
        let thousands = (0 ..< 2100).map { [0x01, 0x00, 0x5E, 0x01, UInt8($0 >> 8), UInt8($0 & 0xFF)] as [UInt8] }
        #expect(d.control(1, 0, d.macTable([Self.other], thousands)) == 0)
        #expect(d.device?.multicastOverflow == true && d.device?.unicastOverflow == false)
        #expect(delivered(d, to: Self.multicast))
        #expect(delivered(d, to: Self.other))
        #expect(!delivered(d, to: [0x02, 0, 0, 0, 0, 0x42]))
        // As long, but malformed (a count past the end) or another command: ERR.
        #expect(d.control(1, 0, d.macTable([Self.other], thousands) + [0]) == 1)
        #expect(d.control(1, 1, d.macTable([Self.other], thousands)) == 1)
    }

    @Test func macAddressSetChangesConfigAndFilter() throws {
        let d = try ready()
        #expect(d.control(0, 0, [0]) == 0)
        #expect(d.control(1, 1, Self.other) == 0)
        #expect((0 ..< 6).map { UInt8(d.config(UInt64($0), 1)) } == Self.other)
        #expect(delivered(d, to: Self.other))
        #expect(!delivered(d, to: FrameBuilder.virtioNet.destinationMAC))
        #expect(d.control(1, 1, Self.multicast) == 1) // a NIC address must be unicast
        #expect(d.control(1, 1, [1, 2, 3]) == 1)
        d.setStatus(0) // reset restores the configured address
        #expect(d.config(5, 1) == 0x56)
    }

    @Test func guestOffloadsAndQueuePairs() throws {
        let d = try VirtioNetDriver(options: "queues=2", capabilities: BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN]))
        d.bringUp(queueCount: 5)
        func le64(_ v: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        #expect(d.control(5, 0, le64(NetF.guestCsum), queue: 4) == 0)
        #expect(d.endpoint.receiveOffloads == [.checksum])
        #expect(d.control(5, 0, le64(0), queue: 4) == 0)
        #expect(d.endpoint.receiveOffloads == [])
        #expect(d.control(5, 0, le64(NetF.guestUFO), queue: 4) == 1) // not negotiated
        #expect(d.control(5, 0, [1, 2], queue: 4) == 1)
        #expect(d.control(4, 0, [2, 0], queue: 4) == 0)
        #expect(d.device?.activeQueuePairs == 2)
        #expect(d.control(4, 0, [3, 0], queue: 4) == 1)
        #expect(d.control(4, 0, [0, 0], queue: 4) == 1)
    }

    @Test func unknownAndMalformedCommandsAnswerError() throws {
        let d = try ready()
        #expect(d.control(9, 0, [0]) == 1)    // unknown class
        #expect(d.control(0, 9, [0]) == 1)    // unknown RX command
        #expect(d.control(0, 0, [0, 0]) == 1) // wrong length
        #expect(d.control(0, 0, [2]) == 1)    // not a boolean
        #expect(d.control(0, 0, []) == 1)
        #expect(d.control(4, 0, [1, 0]) == 1) // MQ not negotiated
        // A chain without a writable ack byte is returned with length 0.
        d.queues[2]?.addChain([(d.buffer([0, 0, 0]), 3, false)])
        d.kick(2)
        #expect(d.queues[2]?.takeUsed().first?.length == 0)
        #expect(d.status & 64 == 0)
    }

    /// §5.1.6.5: the ack is the writable part's first byte, and a command with nowhere to
    /// put it is not run (it was: a readable-only MAC_ADDR_SET changed the MAC).
    @Test func theAckIsTheFirstWritableByteAndACommandWithoutOneIsNotRun() throws {
        let d = try ready()
        let mac = (0 ..< 6).map { d.config(UInt64($0), 1) }
        d.queues[2]?.addChain([(d.buffer([1, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55]), 8, false)])
        d.kick(2)
        #expect(d.queues[2]?.takeUsed().first?.length == 0)
        #expect((0 ..< 6).map { d.config(UInt64($0), 1) } == mac)
        let ack = d.buffer([0xAA, 0xAA])
        d.queues[2]?.addChain([(d.buffer([0, 0, 1]), 3, false), (ack, 2, true)])   // RX PROMISC on
        d.kick(2)
        #expect(d.queues[2]?.takeUsed().first?.length == 1)
        #expect(d.bytes(at: ack, 2) == [0x00, 0xAA])
    }

    @Test func controlFeaturesRequireNegotiation() throws {
        let d = try VirtioNetDriver()
        d.bringUp(queueCount: 3) { $0 & ~(NetF.ctrlRXExtra | NetF.ctrlMACAddr) }
        #expect(d.control(0, 0, [0]) == 0)
        #expect(d.control(0, 5, [1]) == 1) // NOBCAST needs CTRL_RX_EXTRA
        #expect(d.control(1, 1, ControlQueueTests.other) == 1)
    }

    /// query-rx-filter and NIC_RX_FILTER_CHANGED: the control queue's changes reach the
    /// NIC's link, and the link reports the filter in QEMU's terms.
    @Test func receiveFilterIsReportedAndChangesAreAnnounced() throws {
        let d = try ready()
        let link = try #require(d.device?.backend as? LinkControl)
        let changes = Mutex(0)
        link.onReceiveFilterChanged { changes.withLock { $0 += 1 } }
        #expect(link.receiveFilter?.promiscuous == true)
        #expect(d.control(0, 0, [0]) == 0)                                  // PROMISC off
        #expect(d.control(0, 1, [1]) == 0)                                  // ALLMULTI on
        #expect(d.control(1, 0, d.macTable([Self.other], [Self.multicast])) == 0)
        #expect(changes.withLock { $0 } == 3)
        let info = try #require(link.receiveFilter)
        #expect(!info.promiscuous && info.multicast == .all && info.unicast == .normal && info.broadcastAllowed)
        #expect(info.mainMAC == MACAddress(FrameBuilder.virtioNet.destinationMAC))
        #expect(info.unicastTable == [MACAddress(Self.other)] && info.multicastTable == [MACAddress(Self.multicast)])
        #expect(d.control(0, 9, [1]) == 1)                                  // a bad command changes nothing
        #expect(changes.withLock { $0 } == 3)
    }
}
