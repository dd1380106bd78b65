import VMMBlock
import VMMCore
import VMMTestKit
@testable import Virtio
@testable import VirtioBlk

/// What Linux's virtio_blk does to the device (virtblk_add_req: header, data, status),
/// on top of the test kit's virtio driver.
final class VirtioBlkDriver: VirtioTestDriver {
    enum T { static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8, discard: UInt32 = 11, writeZeroes: UInt32 = 13 }
    enum S { static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2 }

    let disk: InMemoryDisk
    let blk: TestDevice
    var device: VirtioBlk? { (blk.function.device as? VirtioBlkDevice)?.device }
    var transport: VirtioPCITransport? { (blk.function.device as? VirtioBlkDevice)?.transport }

    init(options: String = "", disk: InMemoryDisk = InMemoryDisk(size: 1 << 20), memory: GuestMemory? = nil) throws {
        let m = try TestMachine(memory: memory)
        self.disk = disk
        m.disks.enqueue(disk)
        blk = try m.add(VirtioBlkDevice.self, options: options.isEmpty ? "disk=mem" : "disk=mem,\(options)")
        super.init(function: blk, machine: m)
    }

    static func header(type: UInt32, sector: UInt64 = 0) -> [UInt8] {
        withUnsafeBytes(of: type.littleEndian) { Array($0) } + [0, 0, 0, 0] + withUnsafeBytes(of: sector.littleEndian) { Array($0) }
    }

    static func range(sector: UInt64, count: UInt32, flags: UInt32 = 0) -> [UInt8] {
        withUnsafeBytes(of: sector.littleEndian) { Array($0) } + withUnsafeBytes(of: count.littleEndian) { Array($0) }
            + withUnsafeBytes(of: flags.littleEndian) { Array($0) }
    }

    /// A request in Linux's layout: header (readable), data, status (writable). Returns
    /// the data and status addresses.
    @discardableResult
    func submit(type: UInt32, sector: UInt64 = 0, write data: [UInt8] = [], readLength: Int = 0, queue: Int = 0,
                kick: Bool = true) -> (data: GuestAddress, status: GuestAddress) {
        let h = buffer(Self.header(type: type, sector: sector))
        let status = buffer([0xEE])
        var chain: [(address: GuestAddress, length: UInt32, writable: Bool)] = [(h, 16, false)]
        var dataAddress = GuestAddress(0)
        if !data.isEmpty {
            dataAddress = buffer(data)
            chain.append((dataAddress, UInt32(data.count), false))
        } else if readLength > 0 {
            dataAddress = buffer(zeroed: readLength)
            chain.append((dataAddress, UInt32(readLength), true))
        }
        chain.append((status, 1, true))
        queues[queue]?.addChain(chain)
        if kick { self.kick(queue) }
        return (dataAddress, status)
    }

    func status(at a: GuestAddress) -> UInt8 { bytes(at: a, 1).first ?? 0xEE }

    /// Runs the backend's completions.
    func complete() { machine.runQueuedWork() }
}
