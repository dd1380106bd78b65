import Synchronization
import VMMCore
import VMMNet
import VMMTestKit
import VirtioNet

/// The parts of Linux's virtio_pci_modern + virtio_net a datapath benchmark needs:
/// capability discovery, negotiation, an RX and a TX split virtqueue, then rounds of
/// "publish a batch of chains, kick once, reap the used ring". Interrupts are
/// suppressed (VIRTQ_AVAIL_F_NO_INTERRUPT) as a NAPI-polling driver does under load,
/// so nothing but the device and its bus path is timed.
package final class VirtioBenchDriver {
    package enum Feature {
        package static let csum: UInt64 = 1 << 0, guestCsum: UInt64 = 1 << 1, mac: UInt64 = 1 << 5
        package static let guestTSO4: UInt64 = 1 << 7, hostTSO4: UInt64 = 1 << 11, mrgRxbuf: UInt64 = 1 << 15
        package static let version1: UInt64 = 1 << 32
    }

    /// One split virtqueue (virtio 1.2 §2.7) in guest memory.
    package final class Queue {
        package let index: Int, size: Int
        package let desc: GuestView, avail: GuestView, used: GuestView
        package var availIdx: UInt16 = 0
        package var lastUsed: UInt16 = 0

        package init(index: Int, size: Int, machine: TestMachine) throws {
            self.index = index
            self.size = size
            desc = try GuestView(machine: machine, size: UInt64(16 * size))
            avail = try GuestView(machine: machine, size: UInt64(6 + 2 * size), align: 2)
            used = try GuestView(machine: machine, size: UInt64(6 + 8 * size))
            avail.store(UInt16(1), at: 0)                 // VIRTQ_AVAIL_F_NO_INTERRUPT
        }

        package func setDescriptor(_ i: Int, address: UInt64, length: Int, flags: UInt16, next: Int) {
            desc.store(address, at: 16 * i)
            desc.store(UInt32(length), at: 16 * i + 8)
            desc.store(flags, at: 16 * i + 12)
            desc.store(UInt16(next), at: 16 * i + 14)
        }

        @inline(__always) package func offer(_ head: Int) {
            avail.store(UInt16(head), at: 4 + 2 * (Int(availIdx) % size))
            availIdx &+= 1
        }

        /// Makes the offered chains visible (avail->idx, after the ring entries).
        @inline(__always) package func publish() { avail.store(availIdx, at: 2) }

        package var usedIndex: UInt16 { used.load(UInt16.self, at: 2) }
        package var deviceWantsKick: Bool { used.load(UInt16.self, at: 0) & 1 == 0 }   // !VIRTQ_USED_F_NO_NOTIFY
        package func usedID(_ n: UInt16) -> Int { Int(used.load(UInt32.self, at: 4 + 8 * (Int(n) % size))) }
    }

    package let machine: TestMachine
    package let nic: TestDevice
    package private(set) var features: UInt64 = 0
    private var common = (bar: 0, offset: UInt64(0))
    private var notify = (bar: 0, offset: UInt64(0), multiplier: UInt64(0))
    package private(set) var rx: Queue!
    package private(set) var tx: Queue!

    package init(machine: TestMachine, options: String, features wanted: UInt64, queueSize: Int = 256) throws {
        self.machine = machine
        nic = try machine.add(VirtioNetDevice.self, options: options)
        try discover()
        // §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
        setStatus(0); setStatus(1); setStatus(3)
        write(0x00, 4, 0); let low = read(0x04, 4)
        write(0x00, 4, 1); let high = read(0x04, 4)
        features = (low | high << 32) & (wanted | Feature.version1)
        write(0x08, 4, 0); write(0x0C, 4, features & 0xFFFF_FFFF)
        write(0x08, 4, 1); write(0x0C, 4, features >> 32)
        setStatus(1 | 2 | 8)
        guard read(0x14, 1) & 8 != 0 else { throw BenchError.setup("virtio-net refused features 0x\(String(features, radix: 16))") }
        rx = try setupQueue(0, size: queueSize)
        tx = try setupQueue(1, size: queueSize)
        setStatus(1 | 2 | 8 | 4)
    }

    private func read(_ offset: UInt64, _ size: Int) -> UInt64 { nic.read(bar: common.bar, offset: common.offset + offset, size: size) }
    private func write(_ offset: UInt64, _ size: Int, _ v: UInt64) { nic.write(bar: common.bar, offset: common.offset + offset, size: size, value: v) }
    private func setStatus(_ s: UInt8) { write(0x14, 1, UInt64(s)) }

    /// vp_modern_probe: the vendor capabilities (id 9) for common config (1) and notify (2).
    private func discover() throws {
        var p = Int(nic.configRead(0x34, size: 1)) & 0xFC
        var found = Set<UInt8>()
        var hops = 0
        while p != 0 && hops < 48 {
            if nic.configRead(p, size: 1) == 0x09 {
                let type = UInt8(nic.configRead(p + 3, size: 1))
                let bar = Int(nic.configRead(p + 4, size: 1)), offset = UInt64(nic.configRead(p + 8))
                if type == 1, !found.contains(1) { common = (bar, offset) }
                if type == 2, !found.contains(2) { notify = (bar, offset, UInt64(nic.configRead(p + 16))) }
                found.insert(type)
            }
            p = Int(nic.configRead(p + 1, size: 1)) & 0xFC
            hops += 1
        }
        guard found.contains(1), found.contains(2) else { throw BenchError.setup("virtio capabilities missing") }
    }

    private func setupQueue(_ index: Int, size: Int) throws -> Queue {
        write(0x16, 2, UInt64(index))
        let maximum = Int(read(0x18, 2))
        let q = try Queue(index: index, size: min(size, maximum), machine: machine)
        write(0x18, 2, UInt64(q.size))
        for (off, view) in [(UInt64(0x20), q.desc), (0x28, q.avail), (0x30, q.used)] {
            write(off, 4, view.address.raw & 0xFFFF_FFFF)
            write(off + 4, 4, view.address.raw >> 32)
        }
        write(0x1C, 2, 1)
        return q
    }

    /// vp_notify: a 16-bit write of the queue index to its notify address.
    @inline(__always) package func kick(_ q: Queue) {
        nic.write(bar: notify.bar, offset: notify.offset + UInt64(q.index) * notify.multiplier, size: 2, value: UInt64(q.index))
    }
}

/// TX: `slots` chains prepared once (header + frame, split into ≤4 KiB pages after the
/// first `linear` bytes as an skb with page frags would be); each round offers a batch,
/// kicks once and checks the device consumed it all.
package final class VirtioTransmitter {
    package let driver: VirtioBenchDriver
    package let slots: Int, descriptorsPerChain: Int
    package let batch: Int
    private var next = 0
    package private(set) var incomplete = 0
    /// Runs the device's deferred work when a kick left chains unconsumed (the device
    /// stops at its per-action budget, `ActionCostMeter.deferAt`, and continues from the
    /// I/O loop); in memory that is the test machine's queued work, run on this thread
    /// and timed with the rest. Nil where an I/O loop thread runs it (real backends).
    package var settle: (() -> Void)?

    package init(driver: VirtioBenchDriver, frame: [UInt8], header: VirtioNetHeader, linear: Int, batch: Int = 64) throws {
        self.driver = driver
        let q = driver.tx!
        var headerBytes = [UInt8](repeating: 0, count: VirtioNetHeader.size)
        headerBytes.withUnsafeMutableBytes { header.write(to: $0) }
        let packet = headerBytes + frame
        // Pieces: header + the linear part, then 4 KiB pages.
        var pieces: [(Int, Int)] = []
        var at = 0
        let first = min(packet.count, VirtioNetHeader.size + linear)
        pieces.append((0, first)); at = first
        while at < packet.count { let n = min(4096, packet.count - at); pieces.append((at, n)); at += n }
        descriptorsPerChain = pieces.count
        slots = q.size / pieces.count
        self.batch = max(1, min(batch, slots))
        for s in 0 ..< slots {
            let buffer = try GuestView(machine: driver.machine, size: UInt64(packet.count), align: 64)
            buffer.copy(packet, at: 0)
            for (k, piece) in pieces.enumerated() {
                let d = s * pieces.count + k
                let last = k == pieces.count - 1
                q.setDescriptor(d, address: buffer.guestAddress(piece.0), length: piece.1, flags: last ? 0 : 1, next: d + 1)
            }
        }
    }

    /// Sends `n` frames in batches.
    package func send(_ n: Int) {
        let q = driver.tx!
        var left = n
        while left > 0 {
            let b = min(batch, left)
            for _ in 0 ..< b {
                q.offer(next * descriptorsPerChain)
                next += 1
                if next == slots { next = 0 }
            }
            q.publish()
            driver.kick(q)
            // Past its per-action budget the device continues on the I/O loop.
            if q.usedIndex != q.availIdx, let settle { settle() }
            let used = q.usedIndex
            if used != q.availIdx { incomplete += 1 }
            q.lastUsed = used
            left -= b
        }
    }
}

/// RX: every descriptor of the RX queue is a posted buffer of `bufferSize` bytes;
/// frames are injected from the backend side, and each batch the driver reaps the used
/// ring and re-posts those buffers (kicking only when the device asks, as Linux does).
package final class VirtioReceiver {
    package let driver: VirtioBenchDriver
    package let bufferSize: Int
    /// Buffers the device filled so far.
    package private(set) var delivered = 0

    package init(driver: VirtioBenchDriver, bufferSize: Int) throws {
        self.driver = driver
        self.bufferSize = bufferSize
        let q = driver.rx!
        for i in 0 ..< q.size {
            let buffer = try GuestView(machine: driver.machine, size: UInt64(bufferSize), align: 64)
            q.setDescriptor(i, address: buffer.address.raw, length: bufferSize, flags: 2, next: 0)
            q.offer(i)
        }
        q.publish()
        driver.kick(q)
    }

    /// Gives back every buffer the device used.
    @inline(__always) package func refill() {
        let q = driver.rx!
        let used = q.usedIndex
        guard used != q.lastUsed else { return }
        while q.lastUsed != used {
            q.offer(q.usedID(q.lastUsed))
            q.lastUsed &+= 1
            delivered &+= 1
        }
        q.publish()
        if q.deviceWantsKick { driver.kick(q) }
    }
}
