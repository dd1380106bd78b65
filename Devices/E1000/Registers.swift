/// Register offsets in BAR0 (Intel 8254x SDM §13.4, table 13-2). Offsets are byte
/// offsets; every register is 32 bits wide.
enum Reg {
    static let ctrl = 0x0000, status = 0x0008, eecd = 0x0010, eerd = 0x0014
    static let ctrlExt = 0x0018, fla = 0x001C, mdic = 0x0020
    static let fcal = 0x0028, fcah = 0x002C, fct = 0x0030, vet = 0x0038
    static let icr = 0x00C0, itr = 0x00C4, ics = 0x00C8, ims = 0x00D0, imc = 0x00D8
    static let rctl = 0x0100, fcttv = 0x0170, txcw = 0x0178, rxcw = 0x0180
    static let tctl = 0x0400, tipg = 0x0410, ait = 0x0458
    static let ledctl = 0x0E00, pba = 0x1000
    static let fcrtl = 0x2160, fcrth = 0x2168
    static let rdbal = 0x2800, rdbah = 0x2804, rdlen = 0x2808, rdh = 0x2810, rdt = 0x2818
    static let rdtr = 0x2820, rxdctl = 0x2828, radv = 0x282C, rsrpd = 0x2C00
    static let txdmac = 0x3000
    static let tdbal = 0x3800, tdbah = 0x3804, tdlen = 0x3808, tdh = 0x3810, tdt = 0x3818
    static let tidv = 0x3820, txdctl = 0x3828, tadv = 0x382C, tspmt = 0x3830
    static let rxcsum = 0x5000
    static let mta = 0x5200, mtaEnd = 0x5400           // 128 entries
    static let ral0 = 0x5400, raEnd = 0x5480            // 16 RAL/RAH pairs
    static let vfta = 0x5600, vftaEnd = 0x5800          // 128 entries
    static let wuc = 0x5800, wufc = 0x5808, wus = 0x5810, manc = 0x5820
    /// IP4AT: 4 entries of 8 bytes from 0x5840 (Linux e1000_hw.h: E1000_IP4AT 0x05840,
    /// E1000_IP4AT_SIZE 4, `struct e1000_ipv4_at_entry`; the manual's "0x5840–0x5858" names
    /// the last entry's start), so the exclusive end is 0x5860.
    static let ipav = 0x5838, ip4at = 0x5840, ip4atEnd = 0x5860, ip6at = 0x5880, ip6atEnd = 0x5890
    static let wupm = 0x5A00, wupmEnd = 0x5A80
    static let fflt = 0x5F00, ffltEnd = 0x5F20
    static let ffmt = 0x9000, ffmtEnd = 0x9400, ffvt = 0x9800, ffvtEnd = 0x9C00
    /// Statistics block (§13.7): 0x4000 ..< 0x4100.
    static let statsStart = 0x4000, statsEnd = 0x4100
}

/// CTRL bits (§13.4.1).
enum Ctrl {
    static let fullDuplex: UInt32 = 1 << 0
    static let setLinkUp: UInt32 = 1 << 6
    static let speed1000: UInt32 = 2 << 8
    static let reset: UInt32 = 1 << 26
    static let vlanModeEnable: UInt32 = 1 << 30
    static let phyReset: UInt32 = 1 << 31
    /// FD, SLU and 1000 Mb/s, as the EEPROM's initialization words leave it.
    static let powerOn: UInt32 = fullDuplex | setLinkUp | speed1000
}

/// STATUS bits (§13.4.2).
enum Status {
    static let fullDuplex: UInt32 = 1 << 0
    static let linkUp: UInt32 = 1 << 1
    static let speed1000: UInt32 = 2 << 6
}

/// Interrupt cause bits shared by ICR/ICS/IMS/IMC (§13.4.17).
enum Cause {
    static let txdw: UInt32 = 1 << 0      // transmit descriptor written back
    static let txqe: UInt32 = 1 << 1      // transmit queue empty
    static let lsc: UInt32 = 1 << 2       // link status change
    static let rxdmt0: UInt32 = 1 << 4    // receive descriptor minimum threshold
    static let rxo: UInt32 = 1 << 6       // receiver overrun
    static let rxt0: UInt32 = 1 << 7      // receiver timer
    static let mdac: UInt32 = 1 << 9      // MDI/O access complete
    /// The causes ICR latches (§13.4.17); other bits read as 0. Bits 5 and 8 are reserved
    /// in the SDM's table yet latch through ICS on the part: Linux's e1000_intr_test
    /// (ethtool -t) sets IMS/ICS bits 0–9 one at a time and fails unless each shows in ICR.
    static let all: UInt32 = 0x0001_F7FF
}

/// RCTL bits (§13.4.22).
enum Rctl {
    static let enable: UInt32 = 1 << 1
    static let unicastPromiscuous: UInt32 = 1 << 3
    static let multicastPromiscuous: UInt32 = 1 << 4
    static let longPacket: UInt32 = 1 << 5
    static let minThresholdShift: UInt32 = 8       // RDMTS, 2 bits
    static let multicastOffsetShift: UInt32 = 12   // MO, 2 bits
    static let broadcastAccept: UInt32 = 1 << 15
    static let bufferSizeShift: UInt32 = 16        // BSIZE, 2 bits
    static let vlanFilter: UInt32 = 1 << 18
    static let bufferSizeExtension: UInt32 = 1 << 25
    static let stripCRC: UInt32 = 1 << 26
    /// The bits that change what the receive filter accepts.
    static let filterBits: UInt32 = unicastPromiscuous | multicastPromiscuous | broadcastAccept | vlanFilter
}

/// TCTL bits (§13.4.33).
enum Tctl {
    static let enable: UInt32 = 1 << 1
    static let padShortPackets: UInt32 = 1 << 3     // PSP
    /// PSP is the only bit set at power-on (§13.4.33).
    static let powerOn: UInt32 = padShortPackets
}

/// RXCSUM bits (§13.4.24).
enum RxCsum {
    static let startMask: UInt32 = 0xFF
    static let ipOffload: UInt32 = 1 << 8
    static let tcpUDPOffload: UInt32 = 1 << 9
}
