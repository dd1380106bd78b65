import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import E1000

/// Register offsets as a driver (Linux e1000_hw.h) names them; independent of the device's own table.
enum R {
    static let ctrl: UInt64 = 0x0, status: UInt64 = 0x8, eecd: UInt64 = 0x10, eerd: UInt64 = 0x14, mdic: UInt64 = 0x20
    static let icr: UInt64 = 0xC0, itr: UInt64 = 0xC4, ics: UInt64 = 0xC8, ims: UInt64 = 0xD0, imc: UInt64 = 0xD8
    static let rctl: UInt64 = 0x100, tctl: UInt64 = 0x400, tipg: UInt64 = 0x410
    static let rdbal: UInt64 = 0x2800, rdbah: UInt64 = 0x2804, rdlen: UInt64 = 0x2808, rdh: UInt64 = 0x2810, rdt: UInt64 = 0x2818
    static let rdtr: UInt64 = 0x2820, radv: UInt64 = 0x282C
    static let tdbal: UInt64 = 0x3800, tdbah: UInt64 = 0x3804, tdlen: UInt64 = 0x3808, tdh: UInt64 = 0x3810, tdt: UInt64 = 0x3818
    static let tidv: UInt64 = 0x3820, tadv: UInt64 = 0x382C
    static let rxcsum: UInt64 = 0x5000, mta: UInt64 = 0x5200, ral0: UInt64 = 0x5400, rah0: UInt64 = 0x5404, vfta: UInt64 = 0x5600
    static let mpc: UInt64 = 0x4010, gprc: UInt64 = 0x4074, bprc: UInt64 = 0x4078, mprc: UInt64 = 0x407C, gptc: UInt64 = 0x4080
    static let gorcl: UInt64 = 0x4088, gorch: UInt64 = 0x408C, gotcl: UInt64 = 0x4090, gotch: UInt64 = 0x4094
    static let rnbc: UInt64 = 0x40A0, roc: UInt64 = 0x40AC, tpr: UInt64 = 0x40D0, tpt: UInt64 = 0x40D4
    static let prc64: UInt64 = 0x405C, prc1522: UInt64 = 0x4070, ptc64: UInt64 = 0x40D8, bptc: UInt64 = 0x40F4, mptc: UInt64 = 0x40F0
    static let tsctc: UInt64 = 0x40F8, tsctfc: UInt64 = 0x40FC
}

enum Bit {
    static let ctrlRST: UInt32 = 1 << 26, ctrlVME: UInt32 = 1 << 30, ctrlSLU: UInt32 = 1 << 6
    static let rctlEN: UInt32 = 1 << 1, rctlUPE: UInt32 = 1 << 3, rctlMPE: UInt32 = 1 << 4, rctlLPE: UInt32 = 1 << 5
    static let rctlBAM: UInt32 = 1 << 15, rctlVFE: UInt32 = 1 << 18, rctlBSEX: UInt32 = 1 << 25, rctlSECRC: UInt32 = 1 << 26
    static let tctlEN: UInt32 = 1 << 1, tctlPSP: UInt32 = 1 << 3
    static let txdw: UInt32 = 1, txqe: UInt32 = 2, lsc: UInt32 = 4, rxdmt0: UInt32 = 0x10, rxo: UInt32 = 0x40, rxt0: UInt32 = 0x80, mdac: UInt32 = 0x200
}

/// A NIC on a test machine, driven like Linux's e1000 driver drives it.
final class NIC {
    let machine: TestMachine
    let dev: TestDevice
    let model: E1000Device
    var rxRing = GuestAddress(0), txRing = GuestAddress(0)
    var rxCount = 0, txCount = 0
    var rxBuffers: [GuestAddress] = []
    var rxBufferSize = 2048
    var txTail: UInt32 = 0
    var rxNext = 0

    init(options: String = "mac=52:54:00:12:34:56", memorySize: UInt64 = 32 << 20, memory: GuestMemory? = nil,
         endpoint: InMemoryEndpoint? = nil) throws {
        machine = try TestMachine(memorySize: memorySize, memory: memory)
        if let endpoint { machine.network.enqueue(endpoint) }
        dev = try machine.add(E1000Device.self, options: options)
        guard let m = dev.function.device as? E1000Device else { throw TestFailure("not an E1000Device") }
        model = m
    }

    var endpoint: InMemoryEndpoint { dev.endpoint! }
    var line: Int { dev.function.interrupts.intxLine ?? -1 }
    var irq: Bool { machine.interrupts.level(line: line) }

    func r(_ o: UInt64) -> UInt32 { dev.read32(bar: 0, offset: o) }
    func w(_ o: UInt64, _ v: UInt32) { dev.write32(bar: 0, offset: o, v) }

    /// e1000_configure_rx: ring, buffers, RCTL.
    func setUpReceive(count: Int = 8, bufferSize: Int = 2048, rctl: UInt32 = Bit.rctlEN | Bit.rctlBAM | Bit.rctlSECRC, post: Int? = nil) {
        rxCount = count
        rxBufferSize = bufferSize
        rxRing = machine.allocator.alloc(size: UInt64(count * 16), align: 128)
        rxBuffers = (0 ..< count).map { _ in machine.allocator.alloc(size: UInt64(bufferSize), align: 16) }
        for (i, b) in rxBuffers.enumerated() { store(b.raw, at: rxRing.raw + UInt64(i * 16)) }
        w(R.rdbal, UInt32(truncatingIfNeeded: rxRing.raw)); w(R.rdbah, UInt32(truncatingIfNeeded: rxRing.raw >> 32))
        w(R.rdlen, UInt32(count * 16)); w(R.rdh, 0)
        w(R.rdt, UInt32(post ?? count - 1))
        w(R.rctl, rctl)
    }

    /// e1000_configure_tx.
    func setUpTransmit(count: Int = 16) {
        txCount = count
        txRing = machine.allocator.alloc(size: UInt64(count * 16), align: 128)
        w(R.tdbal, UInt32(truncatingIfNeeded: txRing.raw)); w(R.tdbah, 0)
        w(R.tdlen, UInt32(count * 16)); w(R.tdh, 0); w(R.tdt, 0)
        txTail = 0
        w(R.tctl, Bit.tctlEN | Bit.tctlPSP)
    }

    struct RxDescriptor: Equatable {
        var length: Int, checksum: UInt16, status: UInt8, errors: UInt8, special: UInt16
        var done: Bool { status & 1 != 0 }
        var eop: Bool { status & 2 != 0 }
    }

    func rxDescriptor(_ i: Int) -> RxDescriptor {
        let v = load(rxRing.raw + UInt64(i * 16) + 8)
        return RxDescriptor(length: Int(v & 0xFFFF), checksum: UInt16(truncatingIfNeeded: v >> 16), status: UInt8(truncatingIfNeeded: v >> 32),
                            errors: UInt8(truncatingIfNeeded: v >> 40), special: UInt16(truncatingIfNeeded: v >> 48))
    }

    func rxData(_ i: Int, length: Int) -> [UInt8] {
        (try? machine.memory.readBytes(at: rxBuffers[i], count: length)) ?? []
    }

    /// Reads the next received frame as e1000_clean_rx_irq does: descriptors up to EOP.
    func receiveNext() -> (bytes: [UInt8], last: RxDescriptor)? {
        var out: [UInt8] = []
        while true {
            let d = rxDescriptor(rxNext)
            guard d.done else { return nil }
            out += rxData(rxNext, length: d.length)
            store(0, at: rxRing.raw + UInt64(rxNext * 16) + 8)       // driver clears status
            let index = rxNext
            rxNext = (rxNext + 1) % rxCount
            w(R.rdt, UInt32(index))                                  // give the buffer back
            if d.eop { return (out, d) }
        }
    }

    // MARK: Transmit descriptors

    func putTx(low: UInt64, high: UInt64) {
        let at = txRing.raw + UInt64(Int(txTail) * 16)
        store(low, at: at); store(high, at: at + 8)
        txTail = (txTail + 1) % UInt32(txCount)
    }

    /// A legacy descriptor for `bytes` copied into a fresh buffer.
    func legacy(_ bytes: [UInt8], cmd: UInt8 = 0x0B, cso: UInt8 = 0, css: UInt8 = 0, special: UInt16 = 0) {
        let buf = machine.allocator.alloc(size: UInt64(max(bytes.count, 1)))
        try? machine.memory.writeBytes(bytes, at: buf)
        putTx(low: buf.raw, high: UInt64(bytes.count) | UInt64(cso) << 16 | UInt64(cmd) << 24 | UInt64(css) << 40 | UInt64(special) << 48)
    }

    func context(ipcss: Int, ipcso: Int, ipcse: Int, tucss: Int, tucso: Int, tucse: Int, paylen: Int, tucmd: UInt8, hdrlen: Int, mss: Int) {
        let low = UInt64(ipcss) | UInt64(ipcso) << 8 | UInt64(ipcse) << 16 | UInt64(tucss) << 32 | UInt64(tucso) << 40 | UInt64(tucse) << 48
        let high = UInt64(paylen) | UInt64(0x20 | tucmd) << 24 | UInt64(hdrlen) << 40 | UInt64(mss) << 48
        putTx(low: low, high: high)
    }

    func data(_ bytes: [UInt8], dcmd: UInt8, popts: UInt8 = 0, special: UInt16 = 0) {
        let buf = machine.allocator.alloc(size: UInt64(max(bytes.count, 1)))
        try? machine.memory.writeBytes(bytes, at: buf)
        putTx(low: buf.raw, high: UInt64(bytes.count) | 1 << 20 | UInt64(0x20 | dcmd) << 24 | UInt64(popts) << 40 | UInt64(special) << 48)
    }

    func txStatus(_ i: Int) -> UInt8 {
        (try? machine.memory.load(UInt8.self, at: GuestAddress(txRing.raw + UInt64(i * 16) + 12))) ?? 0
    }

    func kickTx() { w(R.tdt, txTail) }

    func store(_ v: UInt64, at a: UInt64) { try? machine.memory.store(v, at: GuestAddress(a)) }
    func load(_ a: UInt64) -> UInt64 { (try? machine.memory.load(UInt64.self, at: GuestAddress(a))) ?? 0 }

    func errors(_ e: E1000GuestError) -> UInt64 { model.guestErrors[e] }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
