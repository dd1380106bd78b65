import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

/// The virtio-net feature bits as a driver names them (virtio 1.2 §5.1.3).
enum NetF {
    static let csum: UInt64 = 1 << 0, guestCsum: UInt64 = 1 << 1, ctrlGuestOffloads: UInt64 = 1 << 2
    static let mtu: UInt64 = 1 << 3, mac: UInt64 = 1 << 5
    static let guestTSO4: UInt64 = 1 << 7, guestTSO6: UInt64 = 1 << 8, guestECN: UInt64 = 1 << 9, guestUFO: UInt64 = 1 << 10
    static let hostTSO4: UInt64 = 1 << 11, hostTSO6: UInt64 = 1 << 12, hostECN: UInt64 = 1 << 13, hostUFO: UInt64 = 1 << 14
    static let mrgRxbuf: UInt64 = 1 << 15, status: UInt64 = 1 << 16, ctrlVQ: UInt64 = 1 << 17, ctrlRX: UInt64 = 1 << 18
    static let ctrlRXExtra: UInt64 = 1 << 20, mq: UInt64 = 1 << 22, ctrlMACAddr: UInt64 = 1 << 23
    static let indirect: UInt64 = 1 << 28, eventIdx: UInt64 = 1 << 29, version1: UInt64 = 1 << 32
}

/// What Linux's virtio_net does to the device on top of the test kit's virtio driver.
final class VirtioNetDriver: VirtioTestDriver {
    let nic: TestDevice
    var device: VirtioNet? { (nic.function.device as? VirtioNetDevice)?.device }
    var transport: VirtioPCITransport? { (nic.function.device as? VirtioNetDevice)?.transport }
    var endpoint: InMemoryEndpoint { nic.endpoint ?? InMemoryEndpoint() }

    init(options: String = "", capabilities: BackendCapabilities? = nil, machine: TestMachine? = nil) throws {
        let m = try machine ?? TestMachine()
        if let capabilities { m.network.enqueue(InMemoryEndpoint(capabilities: capabilities)) }
        nic = try m.add(VirtioNetDevice.self, options: options)
        super.init(function: nic, machine: m)
    }

    /// RX and TX; tests that use the control queue set up three.
    override var defaultQueueCount: Int { 2 }

    // MARK: Frames

    /// Queues one frame for TX as a header descriptor + frame descriptor and kicks.
    func send(_ frame: [UInt8], header: VirtioNetHeader = VirtioNetHeader(), queue: Int = 1, split: Bool = true) {
        let h = buffer(headerBytes(header))
        if split {
            queues[queue]?.addChain([(h, 12, false), (buffer(frame), UInt32(frame.count), false)])
        } else {
            queues[queue]?.addChain([(buffer(headerBytes(header) + frame), UInt32(12 + frame.count), false)])
        }
        kick(queue)
    }

    /// Posts `count` receive buffers of `size` bytes (one writable descriptor each).
    @discardableResult
    func postReceiveBuffers(_ count: Int, size: Int = 1526, queue: Int = 0, kick doKick: Bool = true) -> [GuestAddress] {
        var out: [GuestAddress] = []
        for _ in 0 ..< count {
            let a = machine.allocator.alloc(size: UInt64(size), align: 16)
            queues[queue]?.addChain([(a, UInt32(size), true)])
            out.append(a)
        }
        if doKick { kick(queue) }
        return out
    }
}

func headerBytes(_ h: VirtioNetHeader) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 12)
    out.withUnsafeMutableBytes { h.write(to: $0) }
    return out
}

func parseHeader(_ bytes: [UInt8]) -> VirtioNetHeader? { bytes.withUnsafeBytes { VirtioNetHeader($0) } }
