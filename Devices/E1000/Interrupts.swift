import VMMCore

/// Interrupt causes, masking and moderation (Intel 8254x SDM §13.4.17–21 ICR/ITR/ICS/
/// IMS/IMC; §3.2.7 receive and §3.4.x transmit interrupt delays).
///
/// The interrupt is asserted while (ICR & IMS) != 0: INTx follows that level; with MSI
/// enabled a message is sent each time it becomes asserted. ITR sets a minimum gap
/// between assertions (in 256 ns units): a cause arriving sooner waits for the gap.
extension E1000Device {
    static let throttleUnit: UInt64 = 256      // ITR tick (256 ns)
    /// RDTR bit 31, Flush Partial Descriptor block: fire the pending receive interrupt now.
    static let flushPartialDescriptors: UInt32 = 1 << 31

    var causes: UInt32 {
        get { reg(Reg.icr) }
        set { setReg(Reg.icr, newValue) }
    }

    func raise(_ bits: UInt32) {
        let b = bits & Cause.all
        guard b != 0 else { return }
        causes |= b
        updateInterrupt()
    }

    func clearCauses(_ bits: UInt32) {
        causes &= ~bits
        updateInterrupt()
    }

    /// ICR read: all causes clear (§13.4.17, read-to-clear on the 82540).
    func readAndClearCauses() -> UInt32 {
        let v = causes
        causes = 0
        updateInterrupt()
        return v
    }

    /// Brings the interrupt output in line with (ICR & IMS), honouring ITR.
    func updateInterrupt() {
        let pending = causes & reg(Reg.ims) != 0
        guard pending else {
            if interruptAsserted {
                interruptAsserted = false
                context.interrupts.setINTx(false)
            }
            return
        }
        guard !interruptAsserted else { return }
        let now = context.clock.now
        if now < nextInterruptAllowed {
            if throttleTimer.deadline != nextInterruptAllowed { throttleTimer.arm(at: nextInterruptAllowed) }
            return
        }
        interruptAsserted = true
        let interval = UInt64(reg(Reg.itr) & 0xFFFF) * Self.throttleUnit
        nextInterruptAllowed = now.addingReportingOverflow(interval).overflow ? .max : now + interval
        context.interrupts.setINTx(true)
        if context.interrupts.mode != .intx { context.interrupts.raise(vector: 0) }
    }

    // MARK: Receive delay (§3.2.7.1): RDTR restarts per frame, RADV bounds the wait.

    func receiveInterruptDue() {
        if receiveDelay.frameCompleted(packetDelay: reg(Reg.rdtr), absoluteDelay: reg(Reg.radv)) { raise(Cause.rxt0) }
    }

    func receiveTimerExpired() {
        receiveDelay.cancel()
        raise(Cause.rxt0)
    }

    func writeReceiveDelay(_ value: UInt32) {
        setReg(Reg.rdtr, value & 0xFFFF)
        if value & Self.flushPartialDescriptors != 0, receiveDelay.isArmed {
            receiveTimerExpired()
        }
    }

    // MARK: Transmit delay (§3.4.x): only descriptors with IDE wait for TIDV/TADV.

    func transmitInterruptDue(delayed: Bool) {
        if !delayed || transmitDelay.frameCompleted(packetDelay: reg(Reg.tidv), absoluteDelay: reg(Reg.tadv)) {
            raise(Cause.txdw)
        }
    }

    func transmitTimerExpired() {
        transmitDelay.cancel()
        raise(Cause.txdw)
    }
}
