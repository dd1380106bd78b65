/// Reads and writes the fields of an MSI capability in config space (PCI 3.0 §6.8.1):
/// control at +2, address at +4/+8, data at +12, mask bits at +16, pending bits at +20.
struct MSIState {
    let offset: Int
    let vectors: Int

    func control(in c: PCIConfigSpace) -> UInt16 { c.get16(offset + 2) }
    func enabled(in c: PCIConfigSpace) -> Bool { control(in: c) & 1 == 1 }

    /// Messages the driver enabled (Multiple Message Enable), never more than offered.
    func enabledVectors(in c: PCIConfigSpace) -> Int {
        let mme = Int((control(in: c) >> 4) & 7)
        return min(1 << min(mme, 5), vectors)
    }

    func address(in c: PCIConfigSpace) -> UInt64 {
        UInt64(c.get32(offset + 4)) | UInt64(c.get32(offset + 8)) << 32
    }

    /// With several messages enabled the device modifies the low bits of the data (§6.8.1.6).
    func data(in c: PCIConfigSpace, vector: Int) -> UInt32 {
        let base = UInt32(c.get16(offset + 12))
        let n = UInt32(enabledVectors(in: c))
        return (base & ~(n - 1)) | (UInt32(vector) & (n - 1))
    }

    func masked(_ v: Int, in c: PCIConfigSpace) -> Bool { c.get32(offset + 16) >> UInt32(v) & 1 == 1 }
    func pending(_ v: Int, in c: PCIConfigSpace) -> Bool { c.get32(offset + 20) >> UInt32(v) & 1 == 1 }

    /// Function reset: disabled, one message, address/data/mask/pending cleared.
    func reset(in c: PCIConfigSpace) {
        c.put16(offset + 2, control(in: c) & ~0x71)
        for o in stride(from: offset + 4, to: offset + 24, by: 4) { c.put32(o, 0) }
    }

    func setPending(_ v: Int, _ on: Bool, in c: PCIConfigSpace) {
        var p = c.get32(offset + 20)
        if on { p |= 1 << UInt32(v) } else { p &= ~(1 << UInt32(v)) }
        c.put32(offset + 20, p)
    }
}

/// The MSI-X table and pending-bit array (PCI 3.0 §6.8.2.6–9). Each entry is 16 bytes:
/// message address low/high, data, vector control (bit 0 = mask). Entries start masked.
public final class MSIXTable: @unchecked Sendable {
    let capabilityOffset: Int
    public let vectors: Int
    public let tableBAR: Int, tableOffset: UInt64
    public let pbaBAR: Int, pbaOffset: UInt64
    private var entries: [UInt32]   // 4 dwords per vector
    private var pending: [UInt64]

    init(capabilityOffset: Int, vectors: Int, tableBAR: Int, tableOffset: UInt64, pbaBAR: Int, pbaOffset: UInt64) {
        self.capabilityOffset = capabilityOffset
        self.vectors = vectors
        self.tableBAR = tableBAR; self.tableOffset = tableOffset
        self.pbaBAR = pbaBAR; self.pbaOffset = pbaOffset
        entries = []
        pending = Array(repeating: 0, count: (vectors + 63) / 64)
        reset()
    }

    public var tableSize: UInt64 { UInt64(vectors) * 16 }
    public var pbaSize: UInt64 { UInt64(pending.count) * 8 }

    func reset() {
        entries = Array(repeating: 0, count: vectors * 4)
        for v in 0 ..< vectors { entries[v * 4 + 3] = 1 }
        for i in pending.indices { pending[i] = 0 }
    }

    func control(in c: PCIConfigSpace) -> UInt16 { c.get16(capabilityOffset + 2) }
    /// Function reset: MSI-X disabled and the function mask cleared (PCI 3.0 §6.8.2.3).
    func resetControl(in c: PCIConfigSpace) { c.put16(capabilityOffset + 2, control(in: c) & ~0xC000) }
    func enabled(in c: PCIConfigSpace) -> Bool { control(in: c) & 0x8000 != 0 }
    func functionMasked(in c: PCIConfigSpace) -> Bool { control(in: c) & 0x4000 != 0 }

    func entryMasked(_ v: Int) -> Bool { entries[v * 4 + 3] & 1 == 1 }
    func message(_ v: Int) -> (UInt64, UInt32) {
        (UInt64(entries[v * 4]) | UInt64(entries[v * 4 + 1]) << 32, entries[v * 4 + 2])
    }
    public func isPending(_ v: Int) -> Bool { v >= 0 && v < vectors && pending[v / 64] >> UInt64(v % 64) & 1 == 1 }
    func setPending(_ v: Int, _ on: Bool) {
        if on { pending[v / 64] |= 1 << UInt64(v % 64) } else { pending[v / 64] &= ~(1 << UInt64(v % 64)) }
    }

    /// Reads the table or PBA; nil when the access is not inside either.
    /// Any access size is served from the dword/qword image (the spec requires aligned
    /// dword or qword accesses, §6.8.2; other sizes get the bytes they cover).
    func read(bar: Int, offset: UInt64, size: Int) -> UInt64? {
        if bar == tableBAR, let o = offset.offset(in: tableOffset, length: tableSize, access: size) {
            return bytes(at: o, size: size) { entries[$0] }
        }
        if bar == pbaBAR, let o = offset.offset(in: pbaOffset, length: pbaSize, access: size) {
            return bytes(at: o, size: size) { UInt32(truncatingIfNeeded: pending[$0 / 2] >> (UInt64($0 % 2) * 32)) }
        }
        return nil
    }

    /// Writes the table (the PBA is read-only); false when the access is not ours.
    func write(bar: Int, offset: UInt64, size: Int, value: UInt64) -> Bool {
        if bar == tableBAR, let o = offset.offset(in: tableOffset, length: tableSize, access: size) {
            for i in 0 ..< size {
                let byteOffset = Int(o) + i
                let dword = byteOffset / 4, shift = UInt32(byteOffset % 4) * 8
                let b = UInt32(truncatingIfNeeded: value >> (UInt64(i) * 8)) & 0xFF
                var d = entries[dword]
                d = (d & ~(0xFF << shift)) | (b << shift)
                // Vector control: only bit 0 (mask) is writable (§6.8.2.9).
                if dword % 4 == 3 { d &= 1 }
                entries[dword] = d
            }
            return true
        }
        if bar == pbaBAR, offset.offset(in: pbaOffset, length: pbaSize, access: size) != nil { return true }
        return false
    }

    private func bytes(at o: UInt64, size: Int, dword: (Int) -> UInt32) -> UInt64 {
        var v: UInt64 = 0
        for i in 0 ..< size {
            let byteOffset = Int(o) + i
            let d = dword(byteOffset / 4)
            v |= UInt64((d >> (UInt32(byteOffset % 4) * 8)) & 0xFF) << (UInt64(i) * 8)
        }
        return v
    }
}

extension UInt64 {
    /// `self - base` when an access of `access` bytes at `self` lies wholly inside `[base, base+length)`.
    func offset(in base: UInt64, length: UInt64, access: Int) -> UInt64? {
        guard self >= base else { return nil }
        let o = self - base
        guard o < length, UInt64(access) <= length - o else { return nil }
        return o
    }
}
