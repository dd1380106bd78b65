import Testing
import VMMCore
import VMMNet
import VMMTestKit
import Virtio
@testable import Virtio
@testable import VirtioNet

@Suite("virtio-pci transport")
struct TransportTests {
    @Test func identityAndCapabilities() throws {
        let d = try VirtioNetDriver()
        #expect(d.nic.configRead(0x00) == 0x1041_1AF4) // modern virtio-net (§4.1.2)
        #expect(d.nic.configRead(0x08) >> 8 == 0x02_00_00)
        #expect(d.nic.configRead(0x08) & 0xFF == 1) // revision 1: not transitional
        #expect(d.nic.configRead(0x10) & 0x6 == 0x4) // BAR0 is 64-bit memory
        for type: UInt8 in [1, 2, 3, 4, 5] { #expect(d.capabilities[type] != nil, "cfg_type \(type)") }
        #expect(d.common.length >= 0x38)
        #expect(d.notifyCap.extra == 4) // notify_off_multiplier
        #expect(d.nic.capability(0x11) != nil) // MSI-X
        if let msix = d.nic.capability(0x11) {
            #expect(Int(d.nic.configRead(msix + 2, size: 2) & 0x7FF) + 1 == 4) // 3 queues + config
        }
        #expect(d.read(0x12, 2) == 3) // rx, tx, ctrl
    }

    @Test func offeredFeaturesFollowOptionsAndBackend() throws {
        let plain = try VirtioNetDriver().deviceFeatures
        #expect(plain & NetF.mtu == 0) // only with mtu=: Linux would cap the guest's MTU at it
        for bit in [NetF.version1, NetF.mac, NetF.status, NetF.csum, NetF.guestCsum, NetF.hostTSO4, NetF.hostTSO6,
                    NetF.mrgRxbuf, NetF.ctrlVQ, NetF.ctrlRX, NetF.eventIdx, NetF.indirect, NetF.ctrlGuestOffloads] {
            #expect(plain & bit != 0, "bit \(bit.trailingZeroBitCount)")
        }
        // Without a vnet-header backend the guest cannot be given segments.
        #expect(plain & (NetF.guestTSO4 | NetF.guestTSO6 | NetF.hostUFO | NetF.guestUFO | NetF.mq) == 0)
        let tap = try VirtioNetDriver(capabilities: BackendCapabilities(virtioNetHeader: true, offloads: [.checksum, .tso4, .tso6, .tsoECN, .ufo])).deviceFeatures
        #expect(tap & (NetF.guestTSO4 | NetF.guestTSO6 | NetF.guestECN | NetF.guestUFO | NetF.hostUFO) != 0)
        let off = try VirtioNetDriver(options: "csum=off,mrg_rxbuf=off,event_idx=off,indirect_desc=off,ctrl_vq=off,status=off,guest_csum=off").deviceFeatures
        #expect(off & (NetF.csum | NetF.hostTSO4 | NetF.mrgRxbuf | NetF.eventIdx | NetF.indirect | NetF.ctrlVQ | NetF.status | NetF.guestCsum) == 0)
        #expect(off & NetF.version1 != 0)
        let mq = try VirtioNetDriver(options: "queues=4")
        #expect(mq.deviceFeatures & NetF.mq != 0)
        #expect(mq.read(0x12, 2) == 9)
        #expect(mq.config(8, 2) == 4)
    }

    @Test func featuresOKChecks() throws {
        let d = try VirtioNetDriver()
        #expect(!d.negotiate { $0 & ~NetF.version1 }) // modern-only
        #expect(!d.negotiate { $0 | 1 << 40 })        // not offered
        #expect(!d.negotiate { $0 & ~NetF.csum })     // HOST_TSO4 without CSUM (§5.1.3.1)
        #expect(!d.negotiate { $0 & ~NetF.ctrlVQ })   // CTRL_RX without CTRL_VQ
        #expect(d.negotiate { $0 })
        // Once accepted, driver features are frozen.
        d.write(0x08, 4, 0); d.write(0x0C, 4, 0)
        d.write(0x08, 4, 0)
        #expect(d.read(0x0C, 4) == d.features & 0xFFFF_FFFF)
        // DRIVER_OK is refused without FEATURES_OK.
        d.setStatus(0); d.setStatus(1); d.setStatus(3); d.setStatus(3 | 4)
        #expect(d.status & 4 == 0)
    }

    @Test func statusBitsCannotBeClearedAndResetClearsAll() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        d.setStatus(1) // clearing bits: ignored
        #expect(d.status == 1 | 2 | 4 | 8)
        d.write(0x16, 2, 1)
        #expect(d.read(0x1C, 2) == 1)
        d.setStatus(0)
        #expect(d.status == 0)
        #expect(d.read(0x1C, 2) == 0)
        #expect(d.read(0x10, 2) == 0xFFFF)
        #expect(d.read(0x16, 2) == 0)
    }

    @Test func queueRegisters() throws {
        let d = try VirtioNetDriver(options: "queue-size=1024")
        d.negotiate()
        d.write(0x16, 2, 0)
        #expect(d.read(0x18, 2) == 1024)
        #expect(d.read(0x1E, 2) == 0)
        d.write(0x16, 2, 1)
        #expect(d.read(0x1E, 2) == 1)
        d.write(0x20, 8, 0x1234_5678_9000) // an 8-byte write works as two halves do
        #expect(d.read(0x20, 4) == 0x5678_9000)
        #expect(d.read(0x24, 4) == 0x1234)
        d.write(0x1A, 2, 3)
        #expect(d.read(0x1A, 2) == 3)
        d.write(0x1A, 2, 4) // beyond the 4-entry table: reads back NO_VECTOR (§4.1.4.3.1)
        #expect(d.read(0x1A, 2) == 0xFFFF)
        d.write(0x10, 2, 99)
        #expect(d.read(0x10, 2) == 0xFFFF)
        d.write(0x16, 2, 7) // no such queue
        #expect(d.read(0x18, 2) == 0)
        d.write(0x18, 2, 64)
        d.write(0x1C, 2, 1)
        #expect(d.read(0x1C, 2) == 0)
        #expect(d.status & 64 == 0)
    }

    @Test func queueSetupLockedAfterEnable() throws {
        let d = try VirtioNetDriver()
        d.negotiate()
        let q = d.setupQueue(0, size: 64)
        d.write(0x16, 2, 0)
        d.write(0x18, 2, 128)
        d.write(0x20, 4, 0x4000)
        #expect(d.read(0x18, 2) == 64)
        #expect(d.read(0x20, 4) == q.desc.raw & 0xFFFF_FFFF)
    }

    @Test func deviceConfigLayout() throws {
        let d = try VirtioNetDriver(options: "mac=52:54:00:01:02:03,mtu=9000")
        #expect((0 ..< 6).map { UInt8(d.config(UInt64($0), 1)) } == [0x52, 0x54, 0x00, 0x01, 0x02, 0x03])
        #expect(d.config(6, 2) == 1) // VIRTIO_NET_S_LINK_UP
        #expect(d.config(8, 2) == 1)
        #expect(d.config(10, 2) == 9000)
        #expect(d.deviceFeatures & NetF.mtu != 0)
        #expect(d.config(0, 4) == 0x0100_5452)
    }

    @Test func pciConfigWindowReachesTheBAR() throws {
        let d = try VirtioNetDriver()
        let cap = try #require(d.capabilities[5]).configOffset
        d.nic.configWrite(cap + 4, size: 1, value: 0)          // bar
        d.nic.configWrite(cap + 8, value: UInt32(d.common.offset + 0x12)) // num_queues
        d.nic.configWrite(cap + 12, value: 2)                   // length
        #expect(d.nic.configRead(cap + 16) & 0xFFFF == 3)
        d.nic.configWrite(cap + 8, value: UInt32(d.common.offset + 0x14))
        d.nic.configWrite(cap + 12, value: 1)
        d.nic.configWrite(cap + 16, value: 1)                    // status = ACKNOWLEDGE through the window
        #expect(d.status == 1)
    }

    /// §4.1.4.9.1: a write of pci_cfg_data writes the window's first cap.length bytes, so
    /// a narrower write merges with what the window holds; it used the access's own value,
    /// and only at the window's first byte.
    @Test func pciConfigWindowWritesWhatTheWindowHolds() throws {
        let d = try VirtioNetDriver()
        let cap = try #require(d.capabilities[5]).configOffset
        let queueSelect = UInt64(d.common.offset) + 0x16
        d.nic.configWrite(cap + 4, size: 1, value: 0)
        d.nic.configWrite(cap + 8, value: UInt32(queueSelect))
        d.nic.configWrite(cap + 12, value: 2)
        d.nic.configWrite(cap + 16, size: 2, value: 2)                  // queue_select = 2 through the window
        #expect(d.nic.read(bar: 0, offset: queueSelect, size: 2) == 2)
        d.nic.write(bar: 0, offset: queueSelect, size: 2, value: 0)
        d.nic.configWrite(cap + 17, size: 1, value: 0)                  // the high byte: writes 0x0002 again
        #expect(d.nic.read(bar: 0, offset: queueSelect, size: 2) == 2)
        #expect(d.nic.configRead(cap + 16, size: 2) == 2)               // a read fills the window from the BAR
    }

    /// The window reaches the MSI-X table in the same BAR (the core's, not the
    /// transport's): it answered 0 there and dropped writes.
    @Test func pciConfigWindowReachesTheMSIXTable() throws {
        let d = try VirtioNetDriver()
        let cap = try #require(d.capabilities[5]).configOffset
        let entry1Data = VirtioPCILayout.msixTableOffset + 16 + 8       // vector 1's message data
        d.nic.configWrite(cap + 4, size: 1, value: 0)
        d.nic.configWrite(cap + 8, value: UInt32(entry1Data))
        d.nic.configWrite(cap + 12, value: 4)
        d.nic.configWrite(cap + 16, value: 0x4321)
        #expect(d.nic.read(bar: 0, offset: entry1Data, size: 4) == 0x4321)
        d.nic.write(bar: 0, offset: entry1Data, size: 4, value: 0x1234)
        #expect(d.nic.configRead(cap + 16) == 0x1234)
    }

    @Test func oddAccessesAreHarmless() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        for size in [1, 2, 4, 8] {
            for off in stride(from: UInt64(0), to: 0x40, by: 1) { _ = d.read(off, size) }
        }
        d.write(0x13, 1, 0xFF); d.write(0x14, 2, 0xFFFF); d.write(0x00, 8, .max); d.write(0x3A, 2, 1)
        _ = d.nic.read(bar: 0, offset: 0x7FFF, size: 1)
        d.nic.write(bar: 0, offset: 0x2000, size: 4, value: 0xFFFF_FFFF) // config writes are ignored
        d.nic.write(bar: 0, offset: 0x3000 + 4 * 200, size: 2, value: 0)  // no such queue
        #expect(d.status == 1 | 2 | 4 | 8)
        #expect(d.config(0, 1) == 0x52)
    }

    @Test func badOptionsAreNamed() throws {
        let m = try TestMachine()
        for (opts, key) in [("queue-size=100", "queue-size"), ("queue-size=2048", "queue-size"), ("mtu=70000", "mtu"),
                            ("queues=2,ctrl_vq=off", "queues"), ("mrg_rxbuf=maybe", "mrg_rxbuf"), ("mac=01:00:00:00:00:01", "mac")] {
            #expect(throws: OptionError.self, "\(opts)") { _ = try m.add(VirtioNetDevice.self, options: opts) }
            do { _ = try m.add(VirtioNetDevice.self, options: opts) } catch let e as OptionError {
                #expect("\(e)".contains(key), "\(e)")
            }
        }
        #expect(throws: OptionError.unknownOption(device: "virtio-net", key: "bogus")) {
            _ = try m.add(VirtioNetDevice.self, options: "bogus=1")
        }
        // An MTU larger than the backend's frames.
        m.network.enqueue(InMemoryEndpoint(capabilities: BackendCapabilities(maxFrameSize: 1514)))
        #expect(throws: OptionError.self) { _ = try m.add(VirtioNetDevice.self, options: "mtu=9000") }
    }
}
