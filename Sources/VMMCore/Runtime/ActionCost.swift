/// What one guest action cost a device: a register access, a doorbell (virtio notify,
/// e1000 TDT write), a frame offered by a backend, or a continuation of deferred work on
/// the I/O loop. Counted deterministically, so tests and fuzzers can check that no single
/// action buys unbounded work, where wall time on these machines would be noise.
public struct ActionCost: Equatable, Sendable, CustomStringConvertible {
    /// Ring descriptors (or descriptor chains) read.
    public var descriptors: Int = 0
    /// Frames handed to a backend or delivered to the guest.
    public var frames: Int = 0
    /// Bytes copied between guest memory and device buffers.
    public var bytes: Int = 0

    public init(descriptors: Int = 0, frames: Int = 0, bytes: Int = 0) {
        self.descriptors = descriptors; self.frames = frames; self.bytes = bytes
    }

    /// Whether every count is within `budget`'s.
    public func fits(_ budget: ActionCost) -> Bool {
        descriptors <= budget.descriptors && frames <= budget.frames && bytes <= budget.bytes
    }

    /// The larger of each count.
    public func maximum(_ other: ActionCost) -> ActionCost {
        ActionCost(descriptors: max(descriptors, other.descriptors), frames: max(frames, other.frames),
                   bytes: max(bytes, other.bytes))
    }

    public var description: String { "\(descriptors) descriptors, \(frames) frames, \(bytes) bytes" }
}

/// A device's meter of the cost of the action in progress and the worst one so far.
/// Used under the device lock (the bus and the device's own entry points bracket each
/// action with `begin`/`end`); counts saturate, never trap.
public final class ActionCostMeter: @unchecked Sendable {
    /// The most one action may cost; devices stop and defer the rest before passing it
    /// (within one unit of work: a frame or a chain is never split across actions). A
    /// device whose units are larger than `defaultBudget` allows sets its own when it is
    /// built (`budget(unitDescriptors:)`).
    public var budget: ActionCost
    public private(set) var current = ActionCost()
    public private(set) var worst = ActionCost()
    /// Actions measured.
    public private(set) var actions = 0
    private var depth = 0

    public init(budget: ActionCost = ActionCostMeter.defaultBudget) { self.budget = budget }

    /// Where a device stops and defers the rest of its work to the I/O loop (checked
    /// before each descriptor or chain): 256 of them, as QEMU's virtio-net tx_burst.
    public static let deferAt = ActionCost(descriptors: 256, frames: 256, bytes: 1 << 20)

    /// The most one action may cost: `deferAt`, plus what the last unit of work started
    /// before the check may add: one descriptor (a device that reads descriptors one at a
    /// time, as the e1000 does), one packet's segments (an e1000 TSO packet of 256 KiB at
    /// the smallest segment size Linux emits, 8 bytes: 32,768 frames), one descriptor's
    /// bytes (64 KiB) or one received frame.
    public static let defaultBudget = budget(unitDescriptors: 1)

    /// The budget of a device whose unit of work is up to `unitDescriptors` descriptors: a
    /// virtio chain is walked whole once taken, and is at most 1,024 descriptors (Virtio's
    /// `SplitVirtqueue.maxChainDescriptors`), so a virtio device's budget has one in it.
    public static func budget(unitDescriptors: Int) -> ActionCost {
        ActionCost(descriptors: 256 + max(1, unitDescriptors), frames: 256 + 32_768, bytes: (1 << 20) + (1 << 20))
    }

    /// Whether the action in progress reached `deferAt`: stop and continue later.
    public var shouldDefer: Bool {
        current.descriptors >= Self.deferAt.descriptors || current.frames >= Self.deferAt.frames
            || current.bytes >= Self.deferAt.bytes
    }

    /// Starts an action (nested calls count toward the outermost one).
    public func begin() {
        if depth == 0 { current = ActionCost() }
        depth += 1
    }

    /// Ends an action and records it if it is the worst so far.
    public func end() {
        guard depth > 0 else { return }
        depth -= 1
        guard depth == 0 else { return }
        actions &+= 1
        // Field by field, not `worst.maximum(current)`: the counts were just stored one
        // 8-byte field at a time, and the 16-byte vector loads `maximum` compiles to
        // cannot be forwarded from those stores; each waited for them to reach the cache
        // (8 % of a 1514-byte virtio-net receive in memory, ~15 ns).
        if current.descriptors > worst.descriptors { worst.descriptors = current.descriptors }
        if current.frames > worst.frames { worst.frames = current.frames }
        if current.bytes > worst.bytes { worst.bytes = current.bytes }
    }

    /// Runs `body` as one action.
    @inlinable
    public func measure<T>(_ body: () throws -> T) rethrows -> T {
        begin()
        defer { end() }
        return try body()
    }

    public func descriptors(_ n: Int = 1) { current.descriptors = current.descriptors.addingSaturating(n) }
    public func frames(_ n: Int = 1) { current.frames = current.frames.addingSaturating(n) }
    public func bytes(_ n: Int) { current.bytes = current.bytes.addingSaturating(n) }

    /// Forgets the worst case (tests measure one scenario at a time).
    public func resetWorst() { worst = ActionCost(); actions = 0 }
}

extension Int {
    @inlinable func addingSaturating(_ n: Int) -> Int {
        let (r, o) = addingReportingOverflow(n)
        return o ? (n > 0 ? .max : .min) : r
    }
}
