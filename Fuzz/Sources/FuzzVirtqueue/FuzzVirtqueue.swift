import FuzzSupport
@testable import Virtio
import VMMCore

/// Fuzz target 6: split-virtqueue chain walking on arbitrary guest memory (virtio 1.2
/// §2.7). RAM starts out as the input's bytes, so descriptor tables, rings, `next` links,
/// indirect tables and indices are all hostile; the queue is placed at input-chosen
/// addresses (outside RAM, misaligned, overlapping each other), and between pops the
/// "guest" rewrites memory under the device. Walking must end (loops, runaway chains) and
/// every chain must respect the limits the walker promises.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let ramSize: UInt64 = 0x1_0000
    guard let memory = try? GuestMemory(layout: [(0, ramSize)]) else { return 0 }
    let maxSize = UInt16(1) << UInt16(input.byte() % 11) // 1 … 1024
    var configuration = VirtqueueConfiguration(maxSize: maxSize)
    configuration.size = input.bool() ? maxSize : input.integer(UInt16.self)
    func place() -> GuestAddress {
        // Mostly inside the 64 KiB of RAM (aligned or not), sometimes anywhere.
        input.byte() < 240 ? GuestAddress(UInt64(input.integer(UInt16.self))) : GuestAddress(input.integer(UInt64.self))
    }
    configuration.descriptorArea = place()
    configuration.driverArea = place()
    configuration.deviceArea = place()
    let features = VirtqueueConfiguration.RingFeatures(eventIndex: input.bool(), indirectDescriptors: input.bool())
    // The rest of the input is the guest's RAM image (repeated to fill the 64 KiB).
    let image = input.rest()
    if !image.isEmpty {
        var fill: [UInt8] = []
        fill.reserveCapacity(Int(ramSize))
        while fill.count < Int(ramSize) { fill.append(contentsOf: image.prefix(Int(ramSize) - fill.count)) }
        try? memory.writeBytes(fill, at: GuestAddress(0))
    }
    let queue: SplitVirtqueue
    do { queue = try SplitVirtqueue(index: 0, configuration: configuration, features: features, memory: memory) } catch { return 0 }

    var chain = DescriptorChain()
    var rounds = 0
    var mutation = image.makeIterator()
    while rounds < 4 * Int(maxSize) + 8 {
        rounds += 1
        // Every other round tries a one-buffer pop first (virtio-net's short paths), with the
        // walk for any other shape.
        let head: UInt16
        var written: UInt32 = 0
        do {
            let single = rounds % 2 == 1 ? nil : try (rounds % 4 == 0 ? queue.popReadableBuffer() : queue.popWritableBuffer())
            if let single {
                head = single.head
                fuzzCheck(head < queue.size, "one-buffer head \(head) beyond queue size \(queue.size)")
                var segments: [UnsafeMutableRawBufferPointer] = []
                _ = try? memory.resolve(CollectionOfOne(single.buffer), into: &segments)
            } else {
                guard try queue.pop(into: &chain) else { break }
                head = chain.head
                written = UInt32(truncatingIfNeeded: chain.writableLength)
                let limit = Int(max(queue.size, UInt16(truncatingIfNeeded: SplitVirtqueue.maxIndirectEntries)))
                let descriptors = chain.readable.count + chain.writable.count
                fuzzCheck(chain.head < queue.size, "chain head \(chain.head) beyond queue size \(queue.size)")
                fuzzCheck(descriptors >= 1 && descriptors <= max(limit, Int(SplitVirtqueue.maxIndirectEntries)),
                          "chain of \(descriptors) descriptors (queue size \(queue.size))")
                fuzzCheck(chain.readableLength == chain.readable.reduce(0) { $0 + UInt64($1.length) }, "readable length mismatch")
                fuzzCheck(chain.writableLength == chain.writable.reduce(0) { $0 + UInt64($1.length) }, "writable length mismatch")
                // A device resolves the buffers; out-of-RAM ones are a typed error.
                var segments: [UnsafeMutableRawBufferPointer] = []
                _ = try? memory.resolve(chain.readable, into: &segments)
                _ = try? memory.resolve(chain.writable, into: &segments)
            }
        } catch {
            _ = error.description
            break // the transport would set NEEDS_RESET here
        }
        do {
            try queue.addUsed(head: head, length: written)
        } catch {
            break
        }
        if rounds % 3 == 0 { queue.publishUsed(); _ = queue.needsNotification() }
        if rounds % 5 == 0 { _ = queue.enableNotifications() }
        if rounds % 7 == 0 { queue.disableNotifications() }
        // The guest scribbles on its memory between pops (rings, descriptors, indices).
        if let a = mutation.next(), let b = mutation.next(), let v = mutation.next() {
            try? memory.store(v, at: GuestAddress(UInt64(a) << 8 | UInt64(b)))
        }
    }
    queue.publishUsed()
    _ = queue.needsNotification()
    return 0
}
