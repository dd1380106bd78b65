import Testing
import VMMCore
import VMMNet
import VMMTestKit
@testable import Virtio
@testable import VirtioNet

@Suite("virtio-net notifications and interrupts")
struct NotificationTests {
    @Test func eventIndexSuppressesInterrupts() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(8)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        d.endpoint.inject(frame) // the first completion always notifies
        #expect(d.msiVectors == [1])
        rx.setUsedEvent(3) // "interrupt me once used->idx passes 3" (§2.7.10)
        d.endpoint.inject(frame)
        d.endpoint.inject(frame)
        #expect(d.msiVectors == [1])
        d.endpoint.inject(frame)
        #expect(d.msiVectors == [1, 1])
        #expect(rx.usedIndex == 4)
    }

    /// A backend's delivery of several frames is published once: one used-index update
    /// and one interrupt for all of them (as vhost-net), not one per frame.
    @Test func aDeliveryIsPublishedOnce() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(8)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        #expect(d.endpoint.deliver([frame, frame, frame]) == 3)
        #expect(rx.usedIndex == 3)
        #expect(d.msiVectors == [1])
        #expect(d.endpoint.inject(frame))
        #expect(rx.usedIndex == 4)
    }

    /// Without bus mastering a delivery writes nothing to guest memory: its frames are
    /// lost, counted as link-down (PCI 3.0 §6.2.2); once it is back, frames arrive again.
    @Test func aDeliveryWithoutBusMasteringWritesNothing() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(8)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        let command = d.function.configRead(4, size: 2)
        d.function.configWrite(4, size: 2, value: command & ~4)
        #expect(d.endpoint.deliver([frame, frame]) == 2)
        #expect(rx.usedIndex == 0)
        #expect(d.device?.counters.drops(.linkDown) == 2)
        d.function.configWrite(4, size: 2, value: command)
        #expect(d.endpoint.inject(frame))
        #expect(rx.usedIndex == 1)
    }

    /// The guest runs out of buffers inside a delivery: what was filled is still
    /// published, and the refused frame and those after it stay with the backend.
    @Test func aDeliveryThatRunsOutOfBuffersPublishesWhatItFilled() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(2)
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        #expect(d.endpoint.deliver([frame, frame, frame, frame]) == 2)
        #expect(rx.usedIndex == 2)
        #expect(d.msiVectors == [1])
    }

    /// Without EVENT_IDX the device switches RX kicks off (NO_NOTIFY) only once a frame
    /// took a buffer: a delivery whose frames are all dropped leaves a device that waits
    /// for buffers with its kick on.
    @Test func droppedFramesLeaveTheReceiveKickOn() throws {
        let d = try VirtioNetDriver()
        d.bringUp { $0 & ~NetF.eventIdx }
        let rx = try #require(d.queues[0])
        let frame = FrameBuilder.virtioNet.ethernet(payload: Payload.counting(64))
        #expect(d.endpoint.deliver([frame]) == 0)          // no buffers: it waits, kick on
        #expect(rx.usedFlags == 0)
        // An ECN bit without a GSO type: no header a kernel writes; dropped as malformed.
        #expect(d.endpoint.deliver([frame], header: VirtioNetHeader(gsoType: VirtioNetHeader.gsoECN)) == 1)
        #expect(d.device?.counters.drops(.malformed) == 1)
        #expect(rx.usedFlags == 0, "a dropped frame switched the kick off")
        d.postReceiveBuffers(1)
        #expect(d.endpoint.inject(frame))
        #expect(rx.usedFlags == 1)                         // frames flow: no kicks needed
    }

    @Test func eventIndexDeviceSideAvailEvent() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        for i in 0 ..< 3 { d.send(FrameBuilder.virtioNet.ethernet(payload: Payload.counting(60, seed: i))) }
        // After draining, the device asks to be kicked for the next chain only.
        #expect(d.queues[1]?.availEvent == 3)
        #expect(d.endpoint.sent.count == 3)
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let d = try VirtioNetDriver(options: "event_idx=off")
        d.bringUp()
        let rx = try #require(d.queues[0])
        d.postReceiveBuffers(4)
        rx.setAvailFlags(1) // VIRTQ_AVAIL_F_NO_INTERRUPT
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))
        #expect(d.msiVectors.isEmpty)
        // While buffers remain the device needs no RX kicks; out of buffers it asks again.
        #expect(rx.usedFlags == 1)
        rx.setAvailFlags(0)
        for _ in 0 ..< 3 { d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [2])) }
        #expect(d.msiVectors == [1, 1, 1])
        #expect(!d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [3])))
        #expect(rx.usedFlags == 0)
        // TX: notifications stay enabled after a drain.
        d.send(FrameBuilder.virtioNet.ethernet(payload: [4]))
        #expect(d.queues[1]?.usedFlags == 0)
    }

    @Test func msixVectorMaskingKeepsPendingAndDeliversOnUnmask() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        d.postReceiveBuffers(2)
        let table = UInt64(0x4000), pba = UInt64(0x6000)
        d.nic.write32(bar: 0, offset: table + 16 * 1 + 12, 1) // mask vector 1 (RX)
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))
        #expect(d.msiVectors.isEmpty)
        #expect(d.nic.read32(bar: 0, offset: pba) & 0b10 != 0) // pending bit
        d.nic.write32(bar: 0, offset: table + 16 * 1 + 12, 0)
        #expect(d.msiVectors == [1])
        #expect(d.nic.read32(bar: 0, offset: pba) & 0b10 == 0)
        // Function mask holds every vector.
        let cap = try #require(d.nic.capability(0x11))
        let control = d.nic.configRead(cap + 2, size: 2)
        d.nic.configWrite(cap + 2, size: 2, value: control | 0x4000)
        d.queues[0]?.setUsedEvent(1) // with EVENT_IDX the driver re-arms, as virtqueue_enable_cb does
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [2]))
        #expect(d.msiVectors == [1])
        d.nic.configWrite(cap + 2, size: 2, value: control & ~0x4000)
        #expect(d.msiVectors == [1, 1])
    }

    @Test func queueWithoutVectorRaisesNothing() throws {
        let d = try VirtioNetDriver()
        d.negotiate()
        for v in 0 ... 3 { d.nic.programMSIX(vector: v, data: UInt32(0x40 + v)) }
        d.setupQueue(0, vector: 0xFFFF)
        d.setupQueue(1, vector: 2)
        d.driverOK()
        d.postReceiveBuffers(1)
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))
        #expect(d.msiVectors.isEmpty)
        #expect(d.queues[0]?.takeUsed().count == 1)
    }

    @Test func intxAndISRWhenMSIXIsOff() throws {
        let d = try VirtioNetDriver()
        d.bringUp(msix: false)
        let line = try #require(d.nic.function.interrupts.intxLine)
        d.postReceiveBuffers(1)
        d.endpoint.inject(FrameBuilder.virtioNet.ethernet(payload: [1]))
        #expect(d.machine.interrupts.level(line: line))
        #expect(d.readISR() == 1)
        #expect(!d.machine.interrupts.level(line: line)) // reading ISR lowers INTx (§4.1.4.5)
        #expect(d.readISR() == 0)
        d.endpoint.setLink(up: false)
        #expect(d.machine.interrupts.level(line: line))
        #expect(d.readISR() == 2)
        #expect(d.machine.interrupts.messages.isEmpty)
    }

    /// A link notice that went stale on the way (QMP's set_link on one thread, the
    /// backend's own change on the I/O loop) changes nothing: the device reads the link.
    @Test func aStaleLinkNoticeLeavesTheStatusAlone() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        d.endpoint.setLink(up: false)
        #expect(d.config(6, 2) & 1 == 0 && d.msiVectors == [0])
        try #require(d.device).linkStateChanged(up: true)
        #expect(d.config(6, 2) & 1 == 0)
        #expect(d.msiVectors == [0])
    }

    @Test func linkChangeUpdatesStatusAndSendsConfigInterrupt() throws {
        let d = try VirtioNetDriver()
        d.bringUp()
        let generation = d.read(0x15, 1)
        d.endpoint.setLink(up: false)
        #expect(d.config(6, 2) & 1 == 0)
        #expect(d.msiVectors == [0])
        #expect(d.read(0x15, 1) != generation)
        d.endpoint.setLink(up: true)
        #expect(d.config(6, 2) & 1 == 1)
        #expect(d.msiVectors == [0, 0])
        // Before DRIVER_OK there is no interrupt, only the new status.
        let e = try VirtioNetDriver()
        e.negotiate()
        e.endpoint.setLink(up: false)
        #expect(e.config(6, 2) == 0)
        #expect(e.machine.interrupts.events.isEmpty)
    }
}
