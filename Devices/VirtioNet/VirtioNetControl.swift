import VMMCore
import VMMNet
import Virtio

/// Control queue commands (virtio 1.2 §5.1.6.5): `{u8 class; u8 command; data…}` readable,
/// then one writable `u8 ack`.
enum VirtioNetControl {
    static let ok: UInt8 = 0, error: UInt8 = 1
    enum Class: UInt8 { case rx = 0, mac = 1, mq = 4, guestOffloads = 5 }
    /// VIRTIO_NET_CTRL_RX_* (§5.1.6.5.1).
    enum RXCommand: UInt8 { case promiscuous = 0, allMulticast, allUnicast, noMulticast, noUnicast, noBroadcast }
    static let macTableSet: UInt8 = 0, macAddressSet: UInt8 = 1
    static let mqPairsSet: UInt8 = 0
    static let guestOffloadsSet: UInt8 = 0
    /// Entries per MAC table kept exactly; beyond that the device accepts all of that kind
    /// (as QEMU does with MAC_TABLE_ENTRIES).
    static let macTableEntries = 64
}

extension VirtioNet {
    /// The largest command accepted: two full MAC tables and their counts, with room.
    static let maxControlCommand = 2 + 2 * (4 + 6 * 1024)

    func processControl(_ queue: any Virtqueue) {
        guard transport.isLive, queue.isEnabled else { return }
        let cost = context.cost
        do {
            // Commands until the action's budget says stop, charged by the descriptors
            // walked and the bytes copied (a chain can be 1,024 descriptors: a queue of
            // 1,024 such chains, once charged one unit each, took seconds per kick). The rest
            // continues from the I/O loop. Then publish avail_event (or clear NO_NOTIFY)
            // and look again: with EVENT_IDX, Linux's virtqueue_kick_prepare kicks only
            // past the event index we publish, so a queue that never updates it sees its
            // second command never kicked, and 6.1's virtnet_send_command spins for the
            // ack with RTNL held (the guest hangs at `ip link set up`).
            repeat {
                while !cost.shouldDefer, try queue.pop(into: &chain) {
                    cost.descriptors(chain.descriptorCount)
                    let written = handleControlChain()
                    try queue.addUsed(head: chain.head, length: written)
                }
                transport.completeUsed(queue)
                if cost.shouldDefer {
                    controlContinuation.schedule()
                    return
                }
            } while queue.enableNotifications()
        } catch {
            transport.fail(queue, error)
        }
    }

    /// Runs one command; returns the bytes written into the chain (1 for the ack, 0 when
    /// the chain has nowhere to put it).
    private func handleControlChain() -> UInt32 {
        // §5.1.6.5: `ack` is the device-writable part's first byte (QEMU writes it at offset
        // 0 of the writable buffers). A chain without one is not run: the driver could not
        // learn its outcome (QEMU refuses it as "ctrl missing headers").
        guard let ackBuffer = chain.writable.first(where: { $0.length > 0 }),
              (try? context.memory.hostRange(ackBuffer.address, length: 1)) != nil
        else {
            context.guestLog.warning("virtio-net.ctrl-ack", "control chain \(chain.head) has no writable ack byte in RAM; not run")
            return 0
        }
        let ack: UInt8
        if chain.readableLength < 2 {
            ack = VirtioNetControl.error
        } else if chain.readableLength > UInt64(VirtioNet.maxControlCommand) {
            ack = largeMACTableSet() ? VirtioNetControl.ok : VirtioNetControl.error
        } else if readControlBytes() {
            ack = execute(controlBytes[0], controlBytes[1], data: controlBytes[2...])
        } else {
            ack = VirtioNetControl.error
        }
        return (try? context.memory.store(ack, at: ackBuffer.address)) != nil ? 1 : 0
    }

    /// Copies the command's readable bytes (at most `maxControlCommand`, checked by the
    /// caller) into `controlBytes`, without an array per descriptor.
    private func readControlBytes() -> Bool {
        let total = Int(chain.readableLength)
        context.cost.bytes(total)
        controlBytes.removeAll(keepingCapacity: true)
        controlBytes.append(contentsOf: repeatElement(0, count: total))
        var offset = 0
        let copied = controlBytes.withUnsafeMutableBytes { out -> Bool in
            for b in chain.readable {
                let n = Int(b.length)
                guard n <= total - offset,
                      (try? context.memory.read(into: UnsafeMutableRawBufferPointer(rebasing: out[offset ..< offset + n]), from: b.address)) != nil
                else { return false }
                offset += n
            }
            return true
        }
        guard copied else {
            context.guestLog.warning("virtio-net.ctrl-buffer", "control chain \(chain.head) points outside RAM")
            return false
        }
        return controlBytes.count >= 2
    }

    private func execute(_ cls: UInt8, _ command: UInt8, data: ArraySlice<UInt8>) -> UInt8 {
        typealias F = VirtioNetFeature
        let ok = VirtioNetControl.ok, err = VirtioNetControl.error
        switch VirtioNetControl.Class(rawValue: cls) {
        case .rx:
            guard let cmd = VirtioNetControl.RXCommand(rawValue: command), data.count == 1,
                  let first = data.first, first <= 1 else { return err }
            let needed = cmd.rawValue <= 1 ? F.ctrlRX : F.ctrlRXExtra
            guard transport.negotiated(needed) else { return err }
            let on = first == 1
            switch cmd {
            case .promiscuous: filter.promiscuous = on
            case .allMulticast: allMulticastMode = on
            case .allUnicast: allUnicastMode = on
            case .noMulticast: filter.blockMulticast = on
            case .noUnicast: filter.blockUnicast = on
            case .noBroadcast: filter.acceptBroadcast = !on
            }
            refreshFilterModes()
            backend.receiveFilterChanged()
            return ok
        case .mac:
            if command == VirtioNetControl.macTableSet, transport.negotiated(F.ctrlRX) {
                let tables = setMACTables(length: data.count) { offset, count in
                    offset <= data.count - count ? Array(data.dropFirst(offset).prefix(count)) : nil
                }
                guard tables else { return err }
                backend.receiveFilterChanged()
                return ok
            }
            if command == VirtioNetControl.macAddressSet, transport.negotiated(F.ctrlMACAddress), data.count == 6 {
                let address = MACAddress(Array(data))
                guard !address.isMulticast else { return err }
                mac = address
                refreshFilterAddresses()
                backend.receiveFilterChanged()
                return ok
            }
            return err
        case .mq:
            guard command == VirtioNetControl.mqPairsSet, transport.negotiated(F.mq), data.count == 2,
                  let pairs = le(data, 0, 2), (1 ... UInt64(configuration.queuePairs)).contains(pairs) else { return err }
            activeQueuePairs = Int(pairs)
            return ok
        case .guestOffloads:
            guard command == VirtioNetControl.guestOffloadsSet, transport.negotiated(F.ctrlGuestOffloads), data.count == 8,
                  let bits = le(data, 0, 8) else { return err }
            // Only offloads negotiated at FEATURES_OK may be turned on (§5.1.6.5.6.1).
            let allowed = transport.negotiatedFeatures & F.guestOffloadBits
            guard bits & ~allowed == 0 else { return err }
            receiveOffloads = F.receiveOffloads(bits)
            backend.setReceiveOffloads(receiveOffloads)
            return ok
        case nil:
            return err
        }
    }

    /// `struct virtio_net_ctrl_mac` twice: unicast then multicast, each `le32 entries;
    /// u8 macs[entries][6]` (§5.1.6.5.2), exactly filling the data.
    /// MAC_TABLE_SET (§5.1.6.5.2): two tables `{le32 entries; u8 macs[entries][6]}`, the
    /// command's `length` bytes after class and command, read through `read(offset, count)`.
    /// A table above 64 entries puts its kind into overflow (accept all) without its
    /// entries being read, as QEMU's `virtio_net_handle_mac` does: Linux's
    /// `virtnet_set_rx_mode` sends every address the interface has, with no cap.
    private func setMACTables(length: Int, read: (_ offset: Int, _ count: Int) -> [UInt8]?) -> Bool {
        var cursor = 0
        var tables: [[MACAddress]?] = []   // nil: overflow
        for _ in 0 ..< 2 {
            guard let raw = read(cursor, 4), raw.count == 4 else { return false }
            let n = raw.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            cursor += 4
            guard n <= UInt64(length - cursor) / 6 else { return false }
            let bytes = Int(n) * 6   // ≤ length: no overflow
            if n > UInt64(VirtioNetControl.macTableEntries) {
                tables.append(nil)
            } else {
                guard let entries = read(cursor, bytes), entries.count == bytes else { return false }
                tables.append(stride(from: 0, to: bytes, by: 6).map { MACAddress(Array(entries[$0 ..< $0 + 6])) })
            }
            cursor += bytes
        }
        guard cursor == length, tables.count == 2 else { return false }
        unicastOverflow = tables[0] == nil
        multicastOverflow = tables[1] == nil
        unicastTable = tables[0] ?? []
        multicastTable = tables[1] ?? []
        refreshFilterAddresses()
        refreshFilterModes()
        return true
    }

    /// A command longer than `maxControlCommand` is read in place, not copied: only
    /// MAC_TABLE_SET can be that long (tables of more than 1,024 addresses), and only its
    /// counts and tables of at most 64 entries are read from the chain.
    private func largeMACTableSet() -> Bool {
        guard let head = readChain(at: 0, count: 2), head == [VirtioNetControl.Class.mac.rawValue, VirtioNetControl.macTableSet],
              transport.negotiated(VirtioNetFeature.ctrlRX) else { return false }
        let length = Int(clamping: chain.readableLength - 2)
        guard setMACTables(length: length, read: { offset, count in readChain(at: UInt64(offset) + 2, count: count) }) else { return false }
        backend.receiveFilterChanged()
        return true
    }

    /// `count` bytes (at most a few hundred) at `offset` into the chain's readable buffers.
    private func readChain(at offset: UInt64, count: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var skip = offset
        for b in chain.readable where out.count < count {
            let length = UInt64(b.length)
            if skip >= length {
                skip -= length
                continue
            }
            let n = min(Int(length - skip), count - out.count)
            guard let address = b.address.checkedAdd(skip),
                  let bytes = try? context.memory.readBytes(at: address, count: n) else { return nil }
            out += bytes
            skip = 0
        }
        context.cost.bytes(out.count)
        return out.count == count ? out : nil
    }

    private func le(_ data: ArraySlice<UInt8>, _ offset: Int, _ size: Int) -> UInt64? {
        let start = data.startIndex + offset
        guard offset >= 0, data.endIndex - start >= size else { return nil }
        var v: UInt64 = 0
        for i in 0 ..< size { v |= UInt64(data[start + i]) << (8 * UInt64(i)) }
        return v
    }

    // MARK: Filter state

    /// Power-on filter: promiscuous, as QEMU does, since a driver without VIRTIO_NET_F_CTRL_RX
    /// cannot ask for anything else; Linux turns it off at open through the control queue.
    func resetFilter() {
        filter = MACFilter()
        filter.promiscuous = true
        unicastTable = []; multicastTable = []
        unicastOverflow = false; multicastOverflow = false
        allUnicastMode = false; allMulticastMode = false
        refreshFilterAddresses()
        refreshFilterModes()
    }

    private func refreshFilterAddresses() {
        filter.setAddresses([mac] + unicastTable + multicastTable)
    }

    private func refreshFilterModes() {
        filter.allUnicast = allUnicastMode || unicastOverflow
        filter.allMulticast = allMulticastMode || multicastOverflow
    }
}

/// What QMP `query-rx-filter` reports, in QEMU's terms (virtio_net_query_rxfilter): the
/// modes the control queue set, the MAC tables, and VLANs all accepted (no
/// VIRTIO_NET_F_CTRL_VLAN).
extension VirtioNet: ReceiveFilterReporting {
    public var receiveFilter: ReceiveFilterInfo {
        var info = ReceiveFilterInfo(mainMAC: mac)
        info.promiscuous = filter.promiscuous
        info.unicast = filter.blockUnicast ? .none : (allUnicastMode ? .all : .normal)
        info.multicast = filter.blockMulticast ? .none : (allMulticastMode ? .all : .normal)
        info.broadcastAllowed = filter.acceptBroadcast
        info.unicastOverflow = unicastOverflow
        info.multicastOverflow = multicastOverflow
        info.unicastTable = unicastTable
        info.multicastTable = multicastTable
        return info
    }
}
