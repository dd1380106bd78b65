import Testing
import VMMTestKit
@testable import E1000

@Suite struct EEPROMTests {
    func eerd(_ nic: NIC, _ word: Int) -> UInt16 {
        nic.w(R.eerd, UInt32(word) << 8 | 1)
        let v = nic.r(R.eerd)
        #expect(v & 0x10 != 0)                      // DONE
        return UInt16(v >> 16)
    }

    @Test func macAndChecksumThroughEERD() throws {
        let nic = try NIC(options: "mac=52:54:00:ab:cd:ef")
        #expect([eerd(nic, 0), eerd(nic, 1), eerd(nic, 2)] == [0x5452, 0xAB00, 0xEFCD])
        var sum: UInt16 = 0
        for i in 0 ..< 64 { sum &+= eerd(nic, i) }
        #expect(sum == 0xBABA)
        #expect(eerd(nic, 0x0D) == 0x100E && eerd(nic, 0x0E) == 0x8086)
        #expect(eerd(nic, 0x0B) == 0x001E && eerd(nic, 0x0C) == 0x8086)
    }

    /// Linux's e1000_read_eeprom for Microwire: acquire (REQ/GNT, CS), shift out opcode
    /// 110 and 6 address bits on SK rising edges, shift in 16 bits, standby between words.
    final class Microwire {
        let nic: NIC
        var eecd: UInt32 = 0
        init(_ nic: NIC) { self.nic = nic }
        func write() { nic.w(R.eecd, eecd) }
        func raise() { eecd |= 1; write() }
        func lower() { eecd &= ~1; write() }
        func acquire() {
            eecd = nic.r(R.eecd) | 0x40; write()
            #expect(nic.r(R.eecd) & 0x80 != 0)       // GNT
            eecd &= ~0x5; write()
            eecd |= 0x2; write()
        }
        func shiftOut(_ data: UInt32, bits: Int) {
            eecd &= ~0x4
            for i in stride(from: bits - 1, through: 0, by: -1) {
                eecd = data >> UInt32(i) & 1 == 1 ? eecd | 0x4 : eecd & ~0x4
                write(); raise(); lower()
            }
            eecd &= ~0x4; write()
        }
        func shiftIn() -> UInt16 {
            var v: UInt16 = 0
            for _ in 0 ..< 16 {
                v <<= 1
                raise()
                if nic.r(R.eecd) & 0x8 != 0 { v |= 1 }
                lower()
            }
            return v
        }
        func standby() {
            eecd &= ~0x3; write(); eecd |= 1; write(); eecd |= 2; write(); eecd &= ~1; write()
        }
        func release() { eecd &= ~0x6; write(); raise(); lower(); eecd &= ~0x40; write() }
        func read(_ word: Int) -> UInt16 {
            shiftOut(0b110, bits: 3)
            shiftOut(UInt32(word), bits: 6)
            let v = shiftIn()
            standby()
            return v
        }
    }

    @Test func macAndChecksumThroughEECDBitBanging() throws {
        let nic = try NIC(options: "mac=52:54:00:ab:cd:ef")
        #expect(nic.r(R.eecd) & 0x100 != 0)          // PRES
        #expect(nic.r(R.eecd) & 0x200 == 0)          // 64-word part
        let mw = Microwire(nic)
        mw.acquire()
        let words = (0 ..< 64).map { mw.read($0) }
        mw.release()
        #expect(Array(words[0 ..< 3]) == [0x5452, 0xAB00, 0xEFCD])
        #expect(words.reduce(UInt16(0), &+) == 0xBABA)
    }

    @Test func sequentialReadContinuesIntoTheNextWord() throws {
        let nic = try NIC()
        let mw = Microwire(nic)
        mw.acquire()
        mw.shiftOut(0b110, bits: 3); mw.shiftOut(1, bits: 6)
        let a = mw.shiftIn(), b = mw.shiftIn()
        mw.release()
        #expect(a == 0x1200 && b == 0x5634)
    }
}
