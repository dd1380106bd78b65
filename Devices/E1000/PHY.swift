/// The Marvell 88E1011 copper PHY inside the 82540EM, reached through MDIC (Intel 8254x
/// SDM §13.4.7; PHY registers §13.5). Linux's e1000 driver identifies it by ID
/// 0x01410C20 (`M88E1011_I_PHY_ID` in drivers/net/ethernet/intel/e1000/e1000_hw.h) at PHY
/// address 1: for an 82540 `e1000_detect_gig_phy()` accepts that ID only, and any other
/// makes `e1000_setup_link()` fail ("Hardware Error"). 0x01410C50 is `M88E1000_E_PHY_ID`,
/// the 82543's external PHY.
///
/// Auto-negotiation completes as soon as it is restarted while the backend's link is up:
/// there is no cable to train, and completing at once is what lets a guest see link
/// without QEMU's multi-second delay.
struct M88E1011PHY {
    static let address: UInt32 = 1

    enum Register {
        static let control = 0, status = 1, id1 = 2, id2 = 3
        static let autonegAdvertisement = 4, linkPartnerAbility = 5, autonegExpansion = 6
        static let gigabitControl = 9, gigabitStatus = 10, extendedStatus = 15
        static let specificControl = 16, specificStatus = 17, extendedSpecificControl = 20
    }

    enum Control {
        static let reset: UInt16 = 1 << 15
        static let powerDown: UInt16 = 1 << 11
        /// MII loopback (§13.5.1): transmitted frames come back as received ones.
        static let loopback: UInt16 = 1 << 14
        static let autonegEnable: UInt16 = 1 << 12
        static let restartAutoneg: UInt16 = 1 << 9
        /// Auto-negotiation on, full duplex, 1000 Mb/s select bit (§13.5.1).
        static let powerOn: UInt16 = 0x1140
    }

    enum StatusBits {
        static let linkUp: UInt16 = 1 << 2
        static let autonegComplete: UInt16 = 1 << 5
        /// Capabilities (100/10 full/half, extended status, preamble suppression, AN ability).
        static let capabilities: UInt16 = 0x7949
    }

    /// Inline, not an array: `isLoopback` is read for every frame sent.
    private(set) var registers = InlineArray<32, UInt16>(repeating: 0)

    init() { reset() }

    mutating func reset() {
        registers = InlineArray(repeating: 0)
        registers[Register.control] = Control.powerOn
        registers[Register.id1] = 0x0141
        registers[Register.id2] = 0x0C20
        // Reset values as QEMU's e1000 `phy_reg_init` (hw/net/e1000.c): advertisement 10/100
        // half/full with both pause bits (0x0DE1), PHY specific control with automatic
        // crossover (M88E1000_PSCR_AUTO_X_MODE 0x0060) and 0x0300. Linux rewrites both
        // (`e1000_phy_setup_autoneg`, `e1000_copper_link_mgp_setup`).
        registers[Register.autonegAdvertisement] = 0x0DE1
        registers[Register.gigabitControl] = 0x0E00
        registers[Register.extendedStatus] = 0x3000      // 1000BASE-T full/half capable
        registers[Register.specificControl] = 0x0360
        registers[Register.extendedSpecificControl] = 0x0D60
    }

    var isPoweredDown: Bool { registers[Register.control] & Control.powerDown != 0 }
    var isLoopback: Bool { registers[Register.control] & Control.loopback != 0 }

    /// Reads register `index` given the backend's link state.
    func read(_ index: Int, backendLinkUp: Bool) -> UInt16 {
        guard registers.indices.contains(index) else { return 0 }
        let up = backendLinkUp && !isPoweredDown
        // Negotiation finishes the moment it can; with it disabled the link is forced.
        let negotiated = up && registers[Register.control] & Control.autonegEnable != 0
        switch index {
        case Register.status:
            var v = StatusBits.capabilities
            if up { v |= StatusBits.linkUp }
            if negotiated { v |= StatusBits.autonegComplete }
            return v
        case Register.linkPartnerAbility:
            return negotiated ? 0x45E1 : 0     // ACK, pause, 100/10 full/half
        case Register.autonegExpansion:
            return negotiated ? 0x0001 : 0     // partner is auto-negotiation able
        case Register.gigabitStatus:
            return negotiated ? 0x3C00 : 0     // receivers OK, partner 1000 full/half
        case Register.specificStatus:
            // 1000 Mb/s, full duplex, resolved, link (88E1011 register 17).
            return up ? 0xAC00 : 0
        default:
            return registers[index]
        }
    }

    /// Writes register `index`; reset and restart-autoneg bits self-clear (§13.5.1).
    mutating func write(_ index: Int, value: UInt16) {
        guard registers.indices.contains(index) else { return }
        switch index {
        case Register.control:
            if value & Control.reset != 0 {
                // A software reset keeps the written configuration bits and renegotiates.
                registers[index] = value & ~(Control.reset | Control.restartAutoneg)
                return
            }
            registers[index] = value & ~Control.restartAutoneg
        case Register.status, Register.id1, Register.id2, Register.linkPartnerAbility,
             Register.autonegExpansion, Register.gigabitStatus, Register.extendedStatus, Register.specificStatus:
            break   // read-only
        default:
            registers[index] = value
        }
    }
}

/// MDIC, the MDI control register (§13.4.7).
enum MDIC {
    static let dataMask: UInt32 = 0xFFFF
    static let registerShift: UInt32 = 16
    static let phyShift: UInt32 = 21
    static let opShift: UInt32 = 26
    static let opWrite: UInt32 = 1, opRead: UInt32 = 2
    static let ready: UInt32 = 1 << 28
    static let interruptEnable: UInt32 = 1 << 29
    static let error: UInt32 = 1 << 30
}
