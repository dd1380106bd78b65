import Foundation

/// Minimal ELF32 PVH kernels built in memory, for loader tests and tiny guests.
enum TestELF {
    static let loadAddress: UInt32 = 0x10_0000
    static let codeOffset = 0x100

    /// One PT_LOAD (the whole file at 1 MiB) and one PT_NOTE with the Xen PVH entry note
    /// pointing at `code`.
    static func pvh(code: [UInt8], withNote: Bool = true, noteType: UInt32 = 18) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: codeOffset + code.count)
        func put32(_ v: UInt32, _ at: Int) { for i in 0 ..< 4 { f[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        func put16(_ v: UInt16, _ at: Int) { f[at] = UInt8(v & 0xFF); f[at + 1] = UInt8(v >> 8) }
        f[0 ..< 4] = [0x7F, 0x45, 0x4C, 0x46]
        f[4] = 1; f[5] = 1; f[6] = 1 // ELFCLASS32, little-endian, version
        put16(2, 16); put16(3, 18); put32(1, 20) // ET_EXEC, EM_386, version
        put32(loadAddress + UInt32(codeOffset), 24) // e_entry
        put32(52, 28) // e_phoff
        put16(52, 40); put16(32, 42); put16(withNote ? 2 : 1, 44) // ehsize, phentsize, phnum
        // PT_LOAD: offset 0, paddr 1 MiB, whole file.
        put32(1, 52); put32(0, 56); put32(loadAddress, 60); put32(loadAddress, 64)
        put32(UInt32(f.count), 68); put32(UInt32(f.count), 72); put32(7, 76); put32(0x1000, 80)
        if withNote {
            let note = 116
            put32(4, 84); put32(UInt32(note), 88); put32(0, 92); put32(0, 96); put32(20, 100); put32(20, 104)
            put32(4, note); put32(4, note + 4); put32(noteType, note + 8)
            f[note + 12 ..< note + 16] = [0x58, 0x65, 0x6E, 0] // "Xen\0"
            put32(loadAddress + UInt32(codeOffset), note + 16)
        }
        f.replaceSubrange(codeOffset ..< codeOffset + code.count, with: code)
        return f
    }

    static func write(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftvmm-elf-\(UUID().uuidString)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}
