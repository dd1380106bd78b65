#if canImport(Glibc)
import Glibc
#endif
import E1000
import VMMCore
import VMMNet
import VMMTestKit

/// The parts of Linux's e1000 driver a datapath benchmark needs (Intel 8254x SDM §3.2,
/// §3.3): a receive and a transmit descriptor ring, written as the driver writes them,
/// one TDT write per batch of packets, RDT moved once per refill. IMS stays 0 (NAPI
/// polling under load), so no interrupt path is timed.
package final class E1000BenchDriver {
    package enum Reg {
        package static let ctrl: UInt64 = 0x0, ims: UInt64 = 0xD0, imc: UInt64 = 0xD8, rctl: UInt64 = 0x100, tctl: UInt64 = 0x400
        package static let rdbal: UInt64 = 0x2800, rdbah: UInt64 = 0x2804, rdlen: UInt64 = 0x2808, rdh: UInt64 = 0x2810, rdt: UInt64 = 0x2818
        package static let tdbal: UInt64 = 0x3800, tdbah: UInt64 = 0x3804, tdlen: UInt64 = 0x3808, tdh: UInt64 = 0x3810, tdt: UInt64 = 0x3818
    }
    package static let rctlEnable: UInt32 = 1 << 1, rctlLongPackets: UInt32 = 1 << 5, rctlBroadcast: UInt32 = 1 << 15
    package static let rctlSize16K: UInt32 = 1 << 16 | 1 << 25    // BSIZE=01 with BSEX: 16384-byte buffers
    package static let rctlStripCRC: UInt32 = 1 << 26
    package static let tctlEnable: UInt32 = 1 << 1, tctlPadShort: UInt32 = 1 << 3

    package let machine: TestMachine
    package let nic: TestDevice

    package init(machine: TestMachine, options: String) throws {
        self.machine = machine
        nic = try machine.add(E1000Device.self, options: options)
        w(Reg.imc, 0xFFFF_FFFF)
        w(Reg.ctrl, 1 << 6)                 // SLU
    }

    @inline(__always) package func w(_ offset: UInt64, _ v: UInt32) { nic.write32(bar: 0, offset: offset, v) }
}

/// TX ring of `count` descriptors; each packet has its own buffer prepared once. A packet
/// is one legacy descriptor, or (TSO) a context descriptor and ≤4 KiB data descriptors
/// as e1000_tx_map splits an skb (E1000_MAX_DATA_PER_TXD).
///
/// As Linux's e1000_xmit_frame and e1000_clean_tx_irq: a batch goes into descriptors
/// the device has finished with, TDT moves once per batch, and the driver does not wait
/// for the batch to go out; it reclaims finished packets (DD on their last descriptor)
/// when it needs room. (Today's device sends within the TDT write; a device that walks
/// the ring on another thread, tried in issue 16, needs the driver not to wait.)
package final class E1000Transmitter {
    package static let count = 256
    package let driver: E1000BenchDriver
    package let ring: GuestView
    package let descriptorsPerPacket: Int
    package let batch: Int
    private var templates: [(low: UInt64, high: UInt64)] = []
    private var slot = 0
    private let slots: Int
    private var tail = 0
    /// The last descriptor of each packet handed over and not yet reclaimed, oldest at
    /// `oldest`: a ring of `slots` entries (at most `count - 1` descriptors are in flight).
    private var inFlight: [Int]
    private var oldest = 0, inFlightPackets = 0
    package private(set) var incomplete = 0
    /// Batches dropped because the device finished nothing for `stallLimit` (TX off, a
    /// link that refuses without completing): the soak goes on instead of hanging.
    package private(set) var stalled = 0
    static let stallLimit: UInt64 = 100_000_000
    /// Time this thread spent in TDT writes (what the vCPU pays per doorbell) and their
    /// number, when `timesTailWrites` (two clock reads per batch, kept out of the
    /// in-memory figures).
    package var timesTailWrites = false
    package private(set) var tailWriteNanoseconds: UInt64 = 0, tailWrites = 0
    /// Runs the device's deferred work when a TDT write left the batch not done (past its
    /// per-action budget the device continues on the I/O loop), then checks it is: in
    /// memory that is the test machine's queued work, run on this thread and timed with
    /// the rest (see `VirtioTransmitter.settle`). Nil where an I/O loop thread runs it
    /// (real backends).
    package var settle: (() -> Void)?

    package init(driver: E1000BenchDriver, frame: [UInt8], tso: Bool, batch: Int = 64) throws {
        self.driver = driver
        ring = try GuestView(machine: driver.machine, size: UInt64(16 * E1000Transmitter.count), align: 128)
        var pieces: [(Int, Int)] = []
        if tso {
            var at = 0
            while at < frame.count { let n = min(4096, frame.count - at); pieces.append((at, n)); at += n }
        } else {
            pieces = [(0, frame.count)]
        }
        descriptorsPerPacket = pieces.count + (tso ? 1 : 0)
        slots = E1000Transmitter.count / descriptorsPerPacket
        self.batch = max(1, min(batch, slots - 1))
        inFlight = [Int](repeating: 0, count: slots)
        let header = TSO.headerLength
        for _ in 0 ..< slots {
            let buffer = try GuestView(machine: driver.machine, size: UInt64(frame.count), align: 64)
            buffer.copy(frame, at: 0)
            if tso {
                // Context (§3.3.6): IPCSS/IPCSO/IPCSE, TUCSS/TUCSO, PAYLEN, TUCMD = TCP|IP|TSE, HDRLEN, MSS.
                let low = UInt64(14) | UInt64(24) << 8 | UInt64(33) << 16 | UInt64(34) << 32 | UInt64(50) << 40
                let high = UInt64(frame.count - header) | UInt64(0x20 | 0x07) << 24 | UInt64(header) << 40 | UInt64(TSO.mss) << 48
                templates.append((low, high))
            }
            for (k, piece) in pieces.enumerated() {
                let last = k == pieces.count - 1
                if tso {
                    // Data (§3.3.7): DTYP=1, DCMD = DEXT|IFCS|TSE (+EOP|RS on the last), POPTS = IXSM|TXSM on the first.
                    let dcmd: UInt64 = 0x20 | 0x02 | 0x04 | (last ? 0x09 : 0)
                    let popts: UInt64 = k == 0 ? 0x03 : 0
                    templates.append((buffer.guestAddress(piece.0), UInt64(piece.1) | 1 << 20 | dcmd << 24 | popts << 40))
                } else {
                    // Legacy (§3.3.3): CMD = EOP|IFCS|RS.
                    templates.append((buffer.guestAddress(piece.0), UInt64(piece.1) | UInt64(0x0B) << 24))
                }
            }
        }
        driver.w(E1000BenchDriver.Reg.tdbal, UInt32(truncatingIfNeeded: ring.address.raw))
        driver.w(E1000BenchDriver.Reg.tdbah, UInt32(truncatingIfNeeded: ring.address.raw >> 32))
        driver.w(E1000BenchDriver.Reg.tdlen, UInt32(16 * E1000Transmitter.count))
        driver.w(E1000BenchDriver.Reg.tdh, 0)
        driver.w(E1000BenchDriver.Reg.tdt, 0)
        driver.w(E1000BenchDriver.Reg.tctl, E1000BenchDriver.tctlEnable | E1000BenchDriver.tctlPadShort)
    }

    /// Sends `n` packets: per batch, writes each packet's descriptors fresh (status 0)
    /// into reclaimed room and moves TDT once.
    package func send(_ n: Int) {
        var left = n
        while left > 0 {
            let b = min(batch, left)
            guard makeRoom(packets: b) else {
                stalled += 1
                return
            }
            var lastDescriptor = 0
            for _ in 0 ..< b {
                let base = slot * descriptorsPerPacket
                for k in 0 ..< descriptorsPerPacket {
                    let t = templates[base + k]
                    ring.store(t.low, at: 16 * tail)
                    ring.store(t.high, at: 16 * tail + 8)
                    lastDescriptor = tail
                    tail += 1
                    if tail == E1000Transmitter.count { tail = 0 }
                }
                let entry = oldest + inFlightPackets   // < 2 × slots: no division per packet
                inFlight[entry < slots ? entry : entry - slots] = lastDescriptor
                inFlightPackets += 1
                slot += 1
                if slot == slots { slot = 0 }
            }
            if timesTailWrites {
                let start = monotonicNanoseconds()
                driver.w(E1000BenchDriver.Reg.tdt, UInt32(tail))
                tailWriteNanoseconds &+= monotonicNanoseconds() &- start
                tailWrites += 1
            } else {
                driver.w(E1000BenchDriver.Reg.tdt, UInt32(tail))
            }
            if let settle {
                if !isDone(lastDescriptor) { settle() }
                if !isDone(lastDescriptor) { incomplete += 1 }
            }
            left -= b
        }
    }

    private func isDone(_ descriptor: Int) -> Bool { ring.load(UInt8.self, at: 16 * descriptor + 12) & 1 != 0 }

    /// Reclaims finished packets until `packets` more fit (the ring keeps one descriptor
    /// free: TDT == TDH means empty); false if the device finished nothing for `stallLimit`.
    private func makeRoom(packets: Int) -> Bool {
        var waitingSince: UInt64?
        while true {
            while inFlightPackets > 0, isDone(inFlight[oldest]) {
                oldest = oldest + 1 == slots ? 0 : oldest + 1
                inFlightPackets -= 1
                waitingSince = nil
            }
            if (inFlightPackets + packets) * descriptorsPerPacket < E1000Transmitter.count { return true }
            let now = monotonicNanoseconds()
            if let since = waitingSince {
                if now - since > Self.stallLimit { return false }
            } else {
                waitingSince = now
            }
            if let settle { settle() } else { sched_yield() }
        }
    }
}

/// RX ring of `count` descriptors with `bufferSize` buffers. Frames come from the backend
/// side; each refill the driver clears DD of finished descriptors and moves RDT once.
package final class E1000Receiver {
    package static let count = 256
    package let driver: E1000BenchDriver
    package let ring: GuestView
    private var next = 0
    /// Descriptors the device filled so far.
    package private(set) var delivered = 0

    package init(driver: E1000BenchDriver, jumbo: Bool) throws {
        self.driver = driver
        let bufferSize = jumbo ? 16384 : 2048
        ring = try GuestView(machine: driver.machine, size: UInt64(16 * E1000Receiver.count), align: 128)
        for i in 0 ..< E1000Receiver.count {
            let buffer = try GuestView(machine: driver.machine, size: UInt64(bufferSize), align: 64)
            ring.store(buffer.address.raw, at: 16 * i)
            ring.store(UInt64(0), at: 16 * i + 8)
        }
        typealias R = E1000BenchDriver.Reg
        driver.w(R.rdbal, UInt32(truncatingIfNeeded: ring.address.raw))
        driver.w(R.rdbah, UInt32(truncatingIfNeeded: ring.address.raw >> 32))
        driver.w(R.rdlen, UInt32(16 * E1000Receiver.count))
        driver.w(R.rdh, 0)
        driver.w(R.rdt, UInt32(E1000Receiver.count - 1))
        var rctl = E1000BenchDriver.rctlEnable | E1000BenchDriver.rctlBroadcast | E1000BenchDriver.rctlStripCRC
        if jumbo { rctl |= E1000BenchDriver.rctlLongPackets | E1000BenchDriver.rctlSize16K }
        driver.w(R.rctl, rctl)
    }

    /// e1000_clean_rx_irq + e1000_alloc_rx_buffers: take every descriptor with DD, clear
    /// it, and hand the ring back up to the one before the next to be filled.
    @inline(__always) package func refill() {
        var moved = false
        while ring.load(UInt8.self, at: 16 * next + 12) & 1 != 0 {
            ring.store(UInt64(0), at: 16 * next + 8)
            next += 1
            if next == E1000Receiver.count { next = 0 }
            moved = true
            delivered &+= 1
        }
        if moved {
            driver.w(E1000BenchDriver.Reg.rdt, UInt32((next + E1000Receiver.count - 1) % E1000Receiver.count))
        }
    }
}
