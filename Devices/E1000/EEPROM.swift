import VMMCore

/// The 64-word (93C46, 1 Kbit) Microwire EEPROM of an 82540EM (Intel 8254x SDM §5, table
/// 5-2) and the two ways software reads it: bit-banging EECD (§5.5, §13.4.3) and the
/// EERD register (§13.4.4). The image is read-only: write commands are accepted and
/// ignored (the manual leaves a write-protected part's behaviour unspecified).
struct E1000EEPROM {
    static let wordCount = 64
    /// Words 0x00…0x3F sum to this (§5.6.1; Linux e1000_validate_eeprom_checksum).
    static let checksumTarget: UInt16 = 0xBABA
    /// 0x001E: Intel's subsystem ID of the PRO/1000 MT Desktop Adapter, the 82540EM board
    /// (the PCI ID database's 8086:100e 8086:001e). QEMU's template puts the device ID
    /// (0x100E) here instead; Linux e1000 reads neither.
    static let subsystemID: UInt16 = 0x001E
    static let subsystemVendorID: UInt16 = 0x8086

    private(set) var words: [UInt16]

    init(mac: MACAddress) {
        var w = [UInt16](repeating: 0xFFFF, count: Self.wordCount)
        let b = mac.array
        w[0] = UInt16(b[0]) | UInt16(b[1]) << 8            // Ethernet address, little-endian
        w[1] = UInt16(b[2]) | UInt16(b[3]) << 8
        w[2] = UInt16(b[4]) | UInt16(b[5]) << 8
        w[3] = 0x0000; w[4] = 0xFFFF                         // compatibility; LED config: defaults
        w[5] = 0x0000; w[6] = 0x0000; w[7] = 0x0000
        w[8] = 0x3000; w[9] = 0x1000                         // PBA (part) number
        w[0x0A] = 0x6403                                     // Initialization Control 1
        w[0x0B] = Self.subsystemID
        w[0x0C] = Self.subsystemVendorID
        w[0x0D] = E1000Device.deviceID
        w[0x0E] = E1000Device.vendorID
        w[0x0F] = 0x3040                                     // Initialization Control 2
        w[0x10] = 0x0008; w[0x11] = 0x2000                   // software-defined pins, reserved
        w[0x12] = 0x7E14; w[0x13] = 0x0048                   // PHY/LED configuration
        w[0x14] = 0x1000; w[0x15] = 0x00D8
        w[0x16] = 0x0000; w[0x17] = 0x2700
        w[0x18] = 0x6CC9; w[0x19] = 0x3150; w[0x1A] = 0x0722; w[0x1B] = 0x040B
        w[0x1C] = 0x0984; w[0x1D] = 0x0000; w[0x1E] = 0xC000; w[0x1F] = 0x0706
        w[0x20] = 0x1008; w[0x21] = 0x0000; w[0x22] = 0x0F04; w[0x23] = 0x7FFF
        w[0x24] = 0x4D01                                     // Initialization Control 3 (port A)
        var sum: UInt16 = 0
        for i in 0 ..< Self.wordCount - 1 { sum &+= w[i] }
        w[Self.wordCount - 1] = Self.checksumTarget &- sum
        words = w
    }

    /// Word `index` with the upper address bits ignored, as a 6-address-bit part does.
    func word(_ index: Int) -> UInt16 { words[index & (Self.wordCount - 1)] }

    // MARK: EERD (§13.4.4)

    enum EERD {
        static let start: UInt32 = 1 << 0
        static let done: UInt32 = 1 << 4
        static let addressShift: UInt32 = 8
        static let dataShift: UInt32 = 16
    }

    /// A write of EERD: a read starts when START is set and completes at once.
    func eerdWrite(_ value: UInt32) -> UInt32 {
        guard value & EERD.start != 0 else { return value & 0xFF00 }
        let address = Int((value >> EERD.addressShift) & 0xFF)
        return UInt32(word(address)) << EERD.dataShift | UInt32(address) << EERD.addressShift | EERD.done
    }

    // MARK: EECD bit-banging (§5.5 Microwire, §13.4.3)

    enum EECD {
        static let clock: UInt32 = 1 << 0       // SK
        static let chipSelect: UInt32 = 1 << 1  // CS
        static let dataIn: UInt32 = 1 << 2      // DI (host → EEPROM)
        static let dataOut: UInt32 = 1 << 3     // DO (EEPROM → host)
        static let request: UInt32 = 1 << 6     // REQ
        static let grant: UInt32 = 1 << 7       // GNT
        static let present: UInt32 = 1 << 8     // PRES
        /// SK, CS, DI, FWE (5:4) and REQ are software-written; the rest is read-only.
        static let writable: UInt32 = 0x7F & ~dataOut
        static let readOpcode: UInt32 = 0b10
    }

    /// The serial interface's state between EECD writes.
    private var eecd: UInt32 = 0
    /// Bits shifted in since CS rose, after the start bit (opcode then address).
    private var command: UInt32 = 0
    private var commandBits = 0
    private var sawStartBit = false
    /// During a READ: the next bit to shift out (counting from the addressed word's MSB).
    private var readPosition: Int?
    private var dataOut = true

    mutating func resetInterface() {
        eecd = 0; command = 0; commandBits = 0; sawStartBit = false; readPosition = nil; dataOut = true
    }

    var eecdValue: UInt32 {
        var v = eecd & EECD.writable | EECD.present
        // Arbitration with the device's own EEPROM loader: granted at once (§13.4.3 EE_GNT).
        if v & EECD.request != 0 { v |= EECD.grant }
        if dataOut { v |= EECD.dataOut }
        return v
    }

    /// A write of EECD: edges on CS and SK drive the Microwire state machine. Bits are
    /// latched on SK's rising edge; after the 6th address bit of a READ (start bit, opcode
    /// 10) the part drives a dummy 0, then one data bit (MSB first) per rising edge, and
    /// keeps going into the next word (sequential read), as Linux's e1000_shift_in_ee_bits expects.
    mutating func eecdWrite(_ value: UInt32) {
        let old = eecd
        eecd = value & EECD.writable
        guard eecd & EECD.chipSelect != 0 else {
            resetInterface(keeping: eecd)
            return
        }
        if old & EECD.chipSelect == 0 { resetInterface(keeping: eecd) }
        let rising = old & EECD.clock == 0 && eecd & EECD.clock != 0
        guard rising else { return }
        if let position = readPosition {
            let bit = Int(word(position >> 4) >> UInt16(15 - position & 15)) & 1
            dataOut = bit == 1
            readPosition = (position + 1) & (Self.wordCount * 16 - 1)
            return
        }
        let bit: UInt32 = eecd & EECD.dataIn != 0 ? 1 : 0
        guard sawStartBit else {
            sawStartBit = bit == 1     // leading zeros before the start bit are ignored
            return
        }
        command = command << 1 | bit
        commandBits += 1
        guard commandBits == 8 else { return }   // 2 opcode + 6 address bits
        if command >> 6 == EECD.readOpcode {
            readPosition = Int(command & 0x3F) * 16
            dataOut = false                        // the dummy 0 before the data
        } else {
            dataOut = true                         // ready; write/erase commands are ignored
        }
    }

    private mutating func resetInterface(keeping value: UInt32) {
        resetInterface()
        eecd = value
    }
}
