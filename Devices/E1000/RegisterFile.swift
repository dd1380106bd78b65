import VMMCore

/// Register reads and writes by offset (Intel 8254x SDM §13.4, table 13-2). Registers
/// with behaviour are dispatched here; the others in `storedRegisters` keep what was written.
extension E1000Device {
    /// Registers the driver may program and read back that have no behaviour in this model
    /// (flow control, wake-up, manageability, LEDs, packet buffer split, inter-packet gap…).
    static let storedRegisters: Set<Int> = [
        Reg.ctrlExt, Reg.fla, Reg.fcal, Reg.fcah, Reg.fct, Reg.vet, Reg.fcttv, Reg.txcw, Reg.rxcw,
        Reg.tipg, Reg.ait, Reg.ledctl, Reg.pba, Reg.fcrtl, Reg.fcrth, Reg.rxdctl, Reg.txdctl, Reg.rsrpd,
        Reg.txdmac, Reg.tspmt, Reg.rxcsum, Reg.wuc, Reg.wufc, Reg.manc, Reg.ipav, Reg.rdbah, Reg.tdbah,
        Reg.itr, Reg.radv, Reg.tidv, Reg.tadv,
    ]

    /// Register blocks that are plain storage: wake-up tables and flexible filters.
    static func isStoredTable(_ offset: Int) -> Bool {
        (Reg.ip4at ..< Reg.ip4atEnd).contains(offset) || (Reg.ip6at ..< Reg.ip6atEnd).contains(offset)
            || (Reg.wupm ..< Reg.wupmEnd).contains(offset) || (Reg.fflt ..< Reg.ffltEnd).contains(offset)
            || (Reg.ffmt ..< Reg.ffmtEnd).contains(offset) || (Reg.ffvt ..< Reg.ffvtEnd).contains(offset)
    }

    func readRegister(_ offset: Int) -> UInt32 {
        switch offset {
        case Reg.status: return statusValue
        case Reg.eecd: return eeprom.eecdValue
        case Reg.icr: return readAndClearCauses()
        case Reg.ics, Reg.imc: return 0                      // write-only
        case Reg.ims: return reg(Reg.ims)
        case Reg.statsStart ..< Reg.statsEnd: return statistics.read(offset)
        case Reg.mta ..< Reg.mtaEnd: return filter.readMulticast((offset - Reg.mta) >> 2)
        case Reg.ral0 ..< Reg.raEnd: return filter.readAddress((offset - Reg.ral0) >> 2)
        case Reg.vfta ..< Reg.vftaEnd: return filter.readVLAN((offset - Reg.vfta) >> 2)
        case Reg.ctrl, Reg.eerd, Reg.mdic, Reg.rctl, Reg.tctl, Reg.rdbal, Reg.rdlen, Reg.rdh, Reg.rdt,
             Reg.rdtr, Reg.tdbal, Reg.tdlen, Reg.tdh, Reg.tdt, Reg.wus:
            return reg(offset)
        default:
            if Self.storedRegisters.contains(offset) || Self.isStoredTable(offset) { return reg(offset) }
            context.guestLog.debug("e1000.unknown-register", "read of unimplemented register 0x\(String(offset, radix: 16))")
            return 0
        }
    }

    /// `value` holds the written bits in `lanes` (all ones for a dword write) and zero elsewhere.
    func writeRegister(_ offset: Int, _ written: UInt32, lanes: UInt32) {
        // What a register that stores its value ends up holding.
        let merged = reg(offset) & ~lanes | written
        switch offset {
        case Reg.ctrl: writeControl(merged)
        case Reg.status: break                                   // read-only
        case Reg.eecd: eeprom.eecdWrite(eeprom.eecdValue & ~lanes | written)
        case Reg.eerd: setReg(Reg.eerd, eeprom.eerdWrite(merged))
        case Reg.mdic: writeMDIC(merged)
        case Reg.icr: clearCauses(written)                       // write 1 to clear
        case Reg.ics: raise(written)
        case Reg.ims: setReg(Reg.ims, reg(Reg.ims) | written & Cause.all); updateInterrupt()
        case Reg.imc: setReg(Reg.ims, reg(Reg.ims) & ~written); updateInterrupt()
        case Reg.rctl:
            let before = reg(Reg.rctl)
            writeReceiveControl(merged)
            if (before ^ reg(Reg.rctl)) & Rctl.filterBits != 0 { backend.receiveFilterChanged() }
        case Reg.rdbal, Reg.tdbal: writeRingRegister(offset, merged & ~0xF)
        case Reg.rdlen, Reg.tdlen: writeRingLength(offset, merged)
        case Reg.rdh, Reg.tdh: writeHead(offset, merged & 0xFFFF)
        case Reg.rdt: setReg(Reg.rdt, merged & 0xFFFF); receiveDescriptorsAdded()
        case Reg.tdt: setReg(Reg.tdt, merged & 0xFFFF); transmitPackets()
        case Reg.tctl: setReg(Reg.tctl, merged); transmitPackets()
        case Reg.rdtr: writeReceiveDelay(merged)
        case Reg.itr, Reg.radv, Reg.tidv, Reg.tadv: setReg(offset, merged & 0xFFFF)
        // 16-bit registers (§13.4.5, §13.4.6, §13.4.7): e1000_reg_test expects the upper half to read 0.
        case Reg.fcah, Reg.fct, Reg.vet: setReg(offset, merged & 0xFFFF)
        case Reg.wus: setReg(Reg.wus, reg(Reg.wus) & ~written)      // write 1 to clear
        case Reg.statsStart ..< Reg.statsEnd: break              // read-only counters
        case Reg.mta ..< Reg.mtaEnd:
            let i = (offset - Reg.mta) >> 2
            guard filter.readMulticast(i) != merged else { break }
            filter.writeMulticast(i, merged)
            backend.receiveFilterChanged()
        case Reg.ral0 ..< Reg.raEnd:
            let i = (offset - Reg.ral0) >> 2
            let value = filter.readAddress(i) & ~lanes | written
            guard filter.readAddress(i) != value else { break }
            filter.writeAddress(i, value)
            backend.receiveFilterChanged()
        case Reg.vfta ..< Reg.vftaEnd:
            let i = (offset - Reg.vfta) >> 2
            guard filter.readVLAN(i) != merged else { break }
            filter.writeVLAN(i, merged)
            backend.receiveFilterChanged()
        default:
            if Self.storedRegisters.contains(offset) || Self.isStoredTable(offset) {
                setReg(offset, merged)
            } else {
                guestErrors.record(.unknownRegister)
                context.guestLog.debug("e1000.unknown-register", "write of unimplemented register 0x\(String(offset, radix: 16)) ignored")
            }
        }
    }

    // MARK: CTRL / STATUS (§13.4.1, §13.4.2)

    private func writeControl(_ value: UInt32) {
        if value & Ctrl.reset != 0 {
            deviceReset()
            return
        }
        if value & Ctrl.phyReset != 0 {
            // PHY_RST holds the PHY in reset; it comes out with power-on registers.
            phy.reset()
        }
        setReg(Reg.ctrl, value)
        linkMayHaveChanged()
    }

    var statusValue: UInt32 {
        var v = Status.fullDuplex | Status.speed1000
        if linkIsUp { v |= Status.linkUp }
        return v
    }

    // MARK: MDIC (§13.4.7)

    private func writeMDIC(_ value: UInt32) {
        let phyAddress = (value >> MDIC.phyShift) & 0x1F
        let register = Int((value >> MDIC.registerShift) & 0x1F)
        let op = (value >> MDIC.opShift) & 3
        var result = value & ~(MDIC.ready | MDIC.error)
        if phyAddress != M88E1011PHY.address {
            guestErrors.record(.mdicBadPHYAddress)
            result |= MDIC.error
        } else if op == MDIC.opRead {
            result = result & ~MDIC.dataMask | UInt32(phy.read(register, backendLinkUp: backend.isLinkUp))
        } else if op == MDIC.opWrite {
            phy.write(register, value: UInt16(truncatingIfNeeded: value))
            linkMayHaveChanged()
        } else {
            result |= MDIC.error
        }
        // The access completes at once (MDI/O runs at 2.5 MHz on hardware, ~64 µs).
        setReg(Reg.mdic, result | MDIC.ready)
        if value & MDIC.interruptEnable != 0 { raise(Cause.mdac) }
    }

    // MARK: Rings

    private var receiverEnabled: Bool { reg(Reg.rctl) & Rctl.enable != 0 }
    private var transmitterEnabled: Bool { reg(Reg.tctl) & Tctl.enable != 0 }

    private func ringIsRunning(_ offset: Int) -> Bool {
        offset >= Reg.tdbal ? transmitterEnabled : receiverEnabled
    }

    /// Base address written while the ring runs: the manual forbids it (§3.2.6); the new
    /// value is used from the next descriptor on and the event counted.
    private func writeRingRegister(_ offset: Int, _ value: UInt32) {
        if ringIsRunning(offset), reg(offset) != value {
            guestError(.ringReprogrammedWhileEnabled, "ring register 0x\(String(offset, radix: 16)) changed while the ring is enabled")
        }
        setReg(offset, value)
    }

    /// xDLEN bits 6:0 are ignored (§13.4.27: the length must be 128-byte aligned).
    private func writeRingLength(_ offset: Int, _ value: UInt32) {
        if value & 0x7F != 0 {
            guestError(.ringLengthNotMultipleOf128, "ring length \(value) at 0x\(String(offset, radix: 16)) is not a multiple of 128; low bits ignored")
        }
        writeRingRegister(offset, value & 0x000F_FF80)
    }

    /// Software should write heads only while the ring is stopped (§13.4.28); otherwise
    /// it is honoured (the ring restarts there) and counted.
    private func writeHead(_ offset: Int, _ value: UInt32) {
        if ringIsRunning(offset) {
            guestError(.headWrittenWhileEnabled, "head 0x\(String(offset, radix: 16)) written while the ring is enabled")
        }
        setReg(offset, value)
    }

    private func writeReceiveControl(_ value: UInt32) {
        setReg(Reg.rctl, value)
        // The receiver may have opened (or closed): a frame the backend holds for us is
        // offered again, delivered now or held until it fits.
        if receiveStalled {
            receiveStalled = false
            backend.resumeReceive()
        }
    }
}
