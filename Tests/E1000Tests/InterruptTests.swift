import Testing
import VMMCore
import VMMTestKit
@testable import E1000

@Suite struct InterruptTests {
    @Test func causeMaskAndReadToClear() throws {
        let nic = try NIC()
        nic.w(R.ics, Bit.txdw | Bit.rxt0)
        #expect(!nic.irq)                                               // masked
        nic.w(R.ims, Bit.rxt0)
        #expect(nic.irq)
        #expect(nic.r(R.ims) == Bit.rxt0)
        nic.w(R.imc, Bit.rxt0)
        #expect(!nic.irq)
        nic.w(R.ims, Bit.txdw)
        #expect(nic.irq)
        #expect(nic.r(R.icr) == Bit.txdw | Bit.rxt0)                    // all causes, masked or not
        #expect(nic.r(R.icr) == 0)
        #expect(!nic.irq)
        nic.w(R.ics, Bit.txdw | Bit.lsc)
        nic.w(R.icr, Bit.txdw)                                          // write 1 to clear
        #expect(nic.r(R.icr) == Bit.lsc)
    }

    @Test func intxLineFollowsLevelThroughTheBus() throws {
        let nic = try NIC()
        nic.w(R.ims, Bit.lsc)
        nic.machine.interrupts.clear()
        nic.w(R.ics, Bit.lsc)
        _ = nic.r(R.icr)
        #expect(nic.machine.interrupts.events == [.line(nic.line, level: true), .line(nic.line, level: false)])
    }

    @Test func msiWhenEnabled() throws {
        let nic = try NIC()
        let cap = try #require(nic.dev.capability(0x05))
        nic.dev.configWrite(cap + 4, value: 0xFEE0_0000)
        nic.dev.configWrite(cap + 8, value: 0)
        nic.dev.configWrite(cap + 12, size: 2, value: 0x0041)
        nic.dev.configWrite(cap + 2, size: 2, value: 1)
        nic.w(R.ims, Bit.rxt0)
        nic.w(R.ics, Bit.rxt0)
        #expect(nic.machine.interrupts.messages.count == 1)
        #expect(nic.machine.interrupts.messages.first?.data == 0x41)
        #expect(!nic.irq)
        nic.w(R.ics, Bit.txdw)                                          // still asserted: no new message
        #expect(nic.machine.interrupts.messages.count == 1)
        _ = nic.r(R.icr)
        nic.w(R.ics, Bit.rxt0)
        #expect(nic.machine.interrupts.messages.count == 2)
    }

    @Test func itrSpacesAssertions() throws {
        let nic = try NIC()
        nic.w(R.itr, 1000)                                              // 256 µs
        nic.w(R.ims, Bit.rxt0)
        nic.w(R.ics, Bit.rxt0)
        #expect(nic.irq)
        _ = nic.r(R.icr)
        nic.machine.advance(microseconds: 100)
        nic.w(R.ics, Bit.rxt0)
        #expect(!nic.irq)                                               // too soon
        nic.machine.advance(microseconds: 155)
        #expect(!nic.irq)
        nic.machine.advance(microseconds: 1)
        #expect(nic.irq)
        #expect(nic.r(R.icr) == Bit.rxt0)
    }

    @Test func receiveDelayTimerAndAbsoluteTimer() throws {
        let nic = try NIC()
        nic.setUpReceive(count: 16)
        nic.w(R.ims, Bit.rxt0)
        nic.w(R.rdtr, 50)                                               // 51.2 µs after the last frame
        nic.w(R.radv, 120)                                              // 122.88 µs after the first
        let f = FrameBuilder.e1000.tcp(ack: 0, payload: Payload.counting(10))
        nic.endpoint.inject(f)
        nic.machine.advance(microseconds: 50)
        #expect(!nic.irq)
        nic.machine.advance(microseconds: 2)
        #expect(nic.irq)                                                // RDTR expired
        _ = nic.r(R.icr)
        // Frames every 40 µs keep restarting RDTR; RADV ends the wait.
        for _ in 0 ..< 3 {
            nic.endpoint.inject(f)
            nic.machine.advance(microseconds: 40)
            #expect(!nic.irq)
        }
        nic.endpoint.inject(f)
        nic.machine.advance(microseconds: 3)
        #expect(nic.irq)
    }

    @Test func flushPartialDescriptorFiresNow() throws {
        let nic = try NIC()
        nic.setUpReceive()
        nic.w(R.ims, Bit.rxt0)
        nic.w(R.rdtr, 1000)
        nic.endpoint.inject(FrameBuilder.e1000.tcp(ack: 0, payload: [1]))
        #expect(!nic.irq)
        nic.w(R.rdtr, 1 << 31 | 1000)
        #expect(nic.irq)
        #expect(nic.r(R.rdtr) == 1000)
    }

    @Test func linkDownAndUpRaiseLSC() throws {
        let nic = try NIC()
        nic.w(R.ims, Bit.lsc)
        nic.endpoint.setLink(up: false)
        #expect(nic.irq)
        #expect(nic.r(R.status) & 2 == 0)
        #expect(nic.r(R.icr) & Bit.lsc != 0)
        nic.w(R.mdic, 2 << 26 | 1 << 21 | 1 << 16)
        #expect(nic.r(R.mdic) & 0x4 == 0)                               // BMSR link down too
        nic.endpoint.setLink(up: true)
        #expect(nic.irq)
        #expect(nic.r(R.status) & 2 == 2)
        #expect(nic.r(R.icr) & Bit.lsc != 0)
        nic.endpoint.setLink(up: true)                                  // no change, no cause
        #expect(nic.r(R.icr) == 0)
    }
}
