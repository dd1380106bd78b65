import FuzzSupport
import VMMCore

/// Fuzz target 1: the guest-physical mapper and scatter-gather (issue 2 §1).
///
/// The input picks a memory layout (1–4 regions, adjacent, with gaps, touching 2^64) and
/// then a sequence of accesses at hostile addresses and lengths. Besides "no trap", every
/// answer is compared with an independent model of which ranges are RAM (computed in
/// 128-bit arithmetic so the model itself cannot wrap), and every host view the mapper
/// hands out must lie inside the mapping of the region it claims.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGuestMemory(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let layout = decodeLayout(&input)
    guard let memory = try? GuestMemory(layout: layout) else {
        fuzzCheck(!RAMModel.isValidLayout(layout), "a valid layout was refused: \(layout)")
        return 0
    }
    fuzzCheck(RAMModel.isValidLayout(layout), "an invalid layout was accepted: \(layout)")
    let model = RAMModel(memory.regions.map { ($0.base.raw, $0.size) })
    let anchors = model.anchors
    var ops = 0
    while !input.isExhausted && ops < 64 {
        ops += 1
        runOperation(&input, memory: memory, model: model, anchors: anchors)
    }
    return 0
}

private func decodeLayout(_ input: inout FuzzInput) -> [(base: UInt64, size: UInt64)] {
    let count = 1 + Int(input.byte() % 4)
    var layout: [(base: UInt64, size: UInt64)] = []
    var cursor: UInt64 = 0
    for _ in 0 ..< count {
        // Small regions keep mmap cheap; odd sizes are allowed (the layout is user input).
        let pages = UInt64(input.byte() % 16)
        let size = pages * 4096 + (input.bool() ? UInt64(input.byte()) : 0)
        let base: UInt64
        switch input.byte() % 6 {
        case 0: base = cursor                                      // adjacent to the previous one
        case 1: base = cursor &+ UInt64(input.integer(UInt16.self)) * 16 // a gap
        case 2: base = 0 &- size                                   // ends exactly at 2^64
        case 3: base = 0 &- size &- UInt64(input.byte())            // ends just below 2^64 / wraps
        case 4: base = cursor &- UInt64(input.byte())               // overlaps the previous one
        default: base = input.integer(UInt64.self)
        }
        layout.append((base, size))
        cursor = base &+ size
    }
    return layout
}

/// What is RAM, computed independently of `GuestMemory`.
struct RAMModel {
    let regions: [(start: UInt128, end: UInt128)]   // sorted, half-open, one per region
    let merged: [(start: UInt128, end: UInt128)]    // adjacent regions joined

    init(_ r: [(UInt64, UInt64)]) {
        regions = r.map { (UInt128($0.0), UInt128($0.0) + UInt128($0.1)) }.sorted { $0.start < $1.start }
        var m: [(start: UInt128, end: UInt128)] = []
        for x in regions {
            if let last = m.last, last.end == x.start { m[m.count - 1].end = x.end } else { m.append(x) }
        }
        merged = m
    }

    static func isValidLayout(_ layout: [(base: UInt64, size: UInt64)]) -> Bool {
        let spans = layout.map { (UInt128($0.base), UInt128($0.base) + UInt128($0.size), $0.size) }.sorted { $0.0 < $1.0 }
        for (i, s) in spans.enumerated() {
            if s.2 == 0 || s.1 > (UInt128(1) << 64) { return false }
            if i > 0 && spans[i - 1].1 > s.0 { return false }
        }
        return true
    }

    var anchors: [UInt64] {
        regions.flatMap { [UInt64(truncatingIfNeeded: $0.start), UInt64(truncatingIfNeeded: $0.end)] }
    }

    /// Whole range inside one region (what `hostRange` promises).
    func inOneRegion(_ a: UInt64, _ n: UInt64) -> (start: UInt128, end: UInt128)? {
        let s = UInt128(a), e = UInt128(a) + UInt128(n)
        return regions.first { s >= $0.start && e <= $0.end }
    }

    /// Whole range is RAM, possibly across adjacent regions; empty ranges always are.
    func isRAM(_ a: UInt64, _ n: UInt64) -> Bool {
        if n == 0 { return true }
        let s = UInt128(a), e = UInt128(a) + UInt128(n)
        if e > (UInt128(1) << 64) { return false }
        return merged.contains { s >= $0.start && e <= $0.end }
    }
}

private func decodeLength(_ input: inout FuzzInput, small: Bool) -> UInt64 {
    switch input.byte() % 8 {
    case 0: return 0
    case 1: return UInt64(input.byte() % 9)
    case 2: return UInt64(input.integer(UInt16.self)) % (small ? 4096 : 0x1_0000)
    case 3: return small ? 4096 : UInt64.max
    case 4: return small ? 1 : UInt64.max - UInt64(input.byte())
    case 5: return UInt64(input.integer(UInt32.self)) % (small ? 0x1_0000 : UInt64(UInt32.max))
    default: return UInt64(input.byte()) * 16
    }
}

/// The host view must lie inside the mapping of the region that holds the guest range.
private func checkView(_ view: UnsafeMutableRawBufferPointer, memory: GuestMemory, guest: UInt64) {
    guard view.count > 0, let p = view.baseAddress else { return }
    let host = UInt(bitPattern: p)
    let inside = memory.regions.contains { r in
        let start = UInt(bitPattern: r.host)
        return host >= start && UInt64(host - start) <= r.size && UInt64(view.count) <= r.size - UInt64(host - start)
            && guest >= r.base.raw && guest - r.base.raw == UInt64(host - start)
    }
    fuzzCheck(inside, "view \(p)+\(view.count) for guest 0x\(String(guest, radix: 16)) is outside its region")
}

private func runOperation(_ input: inout FuzzInput, memory: GuestMemory, model: RAMModel, anchors: [UInt64]) {
    let op = input.byte() % 8
    let address = input.address(near: anchors)
    switch op {
    case 0: // the mapper itself
        let n = decodeLength(&input, small: false)
        let expected = n == 0 || model.inOneRegion(address, n) != nil
        do {
            let view = try memory.hostRange(GuestAddress(address), length: n)
            fuzzCheck(expected, "hostRange(0x\(String(address, radix: 16)), \(n)) succeeded outside one region")
            fuzzCheck(UInt64(view.count) == n, "hostRange returned \(view.count) bytes for \(n)")
            checkView(view, memory: memory, guest: address)
            if let last = view.indices.last { view[last] = view[last] } // touch both ends
            if !view.isEmpty { view[0] = view[0] }
        } catch {
            fuzzCheck(!expected, "hostRange(0x\(String(address, radix: 16)), \(n)) failed inside a region: \(error)")
        }
    case 1:
        let n = decodeLength(&input, small: false)
        fuzzCheck(memory.isRAM(GuestAddress(address), length: n) == model.isRAM(address, n),
                  "isRAM(0x\(String(address, radix: 16)), \(n)) disagrees with the model")
    case 2: // bulk write then read back
        let bytes = input.bytes(upTo: 255) + [UInt8](repeating: 0xA5, count: Int(input.byte() % 4) * 1024)
        let ok = model.isRAM(address, UInt64(bytes.count))
        do {
            try memory.writeBytes(bytes, at: GuestAddress(address))
            fuzzCheck(ok, "write of \(bytes.count) at 0x\(String(address, radix: 16)) succeeded outside RAM")
            let back = try memory.readBytes(at: GuestAddress(address), count: bytes.count)
            fuzzCheck(back == bytes, "read back differs after write at 0x\(String(address, radix: 16))")
        } catch {
            fuzzCheck(!ok, "write/read of \(bytes.count) at 0x\(String(address, radix: 16)) failed inside RAM: \(error)")
        }
    case 3: // typed little-endian store/load
        let value = input.integer(UInt64.self)
        let width = input.accessSize()
        let ok = model.isRAM(address, UInt64(width))
        do {
            let a = GuestAddress(address)
            let loaded: UInt64
            switch width {
            case 1: try memory.store(UInt8(truncatingIfNeeded: value), at: a); loaded = UInt64(try memory.load(UInt8.self, at: a))
            case 2: try memory.store(UInt16(truncatingIfNeeded: value), at: a); loaded = UInt64(try memory.load(UInt16.self, at: a))
            case 4: try memory.store(UInt32(truncatingIfNeeded: value), at: a); loaded = UInt64(try memory.load(UInt32.self, at: a))
            default: try memory.store(value, at: a); loaded = try memory.load(UInt64.self, at: a)
            }
            fuzzCheck(ok, "\(width)-byte store at 0x\(String(address, radix: 16)) succeeded outside RAM")
            let mask: UInt64 = width == 8 ? .max : (1 << (8 * UInt64(width))) - 1
            fuzzCheck(loaded == value & mask, "\(width)-byte load after store differs")
            let first = try memory.load(UInt8.self, at: a)
            fuzzCheck(first == UInt8(truncatingIfNeeded: value), "store is not little-endian")
        } catch {
            fuzzCheck(!ok, "\(width)-byte access at 0x\(String(address, radix: 16)) failed inside RAM: \(error)")
        }
    case 4:
        let n = decodeLength(&input, small: true)
        let ok = model.isRAM(address, n)
        do {
            try memory.fill(GuestAddress(address), length: n, with: input.byte())
            fuzzCheck(ok, "fill outside RAM succeeded")
        } catch {
            fuzzCheck(!ok, "fill inside RAM failed: \(error)")
        }
    case 5: // scatter-gather, as a descriptor chain would describe it
        var buffers = [GuestBuffer(address: GuestAddress(address), length: input.integer(UInt32.self))]
        for _ in 0 ..< input.byte() % 8 {
            buffers.append(GuestBuffer(address: GuestAddress(input.address(near: anchors)), length: input.integer(UInt32.self) >> UInt32(input.byte() % 32)))
        }
        let ok = buffers.allSatisfy { model.isRAM($0.address.raw, UInt64($0.length)) }
        let sentinel = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        var segments = [sentinel]
        do {
            try memory.resolve(buffers, into: &segments)
            fuzzCheck(ok, "resolve succeeded with a buffer outside RAM")
            let total = segments.dropFirst().reduce(UInt64(0)) { $0 + UInt64($1.count) }
            let wanted = buffers.reduce(UInt64(0)) { $0 + UInt64($1.length) }
            fuzzCheck(total == wanted, "resolve covered \(total) bytes of \(wanted)")
            for s in segments.dropFirst() { checkView(s, memory: memory, guest: hostToGuest(s, memory) ?? 0) }
        } catch {
            fuzzCheck(!ok, "resolve failed though every buffer is RAM: \(error)")
            fuzzCheck(segments.count == 1, "a failed resolve left \(segments.count - 1) segments behind")
        }
    case 6: // readBytes with any count, including negative and absurd ones
        let count = Int(truncatingIfNeeded: input.integer(UInt64.self) >> UInt64(input.byte() % 64))
        let ok = count >= 0 && model.isRAM(address, UInt64(count))
        do {
            let out = try memory.readBytes(at: GuestAddress(address), count: count)
            fuzzCheck(ok && out.count == count, "readBytes(\(count)) at 0x\(String(address, radix: 16)) misbehaved")
        } catch {
            fuzzCheck(!ok, "readBytes(\(count)) inside RAM failed: \(error)")
        }
    default: // chunk walk across regions
        let n = decodeLength(&input, small: false)
        let ok = model.isRAM(address, n)
        var covered: UInt64 = 0
        do {
            try memory.forEachChunk(GuestAddress(address), length: n) { chunk, offset in
                fuzzCheck(UInt64(offset) == covered, "chunks out of order")
                covered += UInt64(chunk.count)
            }
            fuzzCheck(ok && covered == n, "forEachChunk(0x\(String(address, radix: 16)), \(n)) covered \(covered)")
        } catch {
            fuzzCheck(!ok, "forEachChunk inside RAM failed: \(error)")
        }
    }
}

/// The guest address a host view belongs to (to check that a segment is inside its region).
private func hostToGuest(_ s: UnsafeMutableRawBufferPointer, _ memory: GuestMemory) -> UInt64? {
    guard let p = s.baseAddress else { return nil }
    let host = UInt(bitPattern: p)
    for r in memory.regions {
        let start = UInt(bitPattern: r.host)
        if host >= start, UInt64(host - start) < r.size { return r.base.raw + UInt64(host - start) }
    }
    return nil
}
