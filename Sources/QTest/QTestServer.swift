import Synchronization
import VMMCore
import VMMTestKit

/// QEMU's qtest line protocol (softmmu/qtest.c in QEMU 7.2) over a `QTestMachine`:
/// one request per line, one `OK …`/`FAIL …` line per request, formatted as QEMU formats
/// it, plus asynchronous `IRQ raise N` / `IRQ lower N` lines once interrupts are intercepted.
///
/// Intended differences from QEMU (Docs/testing.md lists them): malformed arguments get a
/// `FAIL …` line where QEMU aborts on an assertion; `clock_step`/`clock_set` always work
/// (time is virtual here); IRQ numbers are the machine's GSIs (PCI INTx on 16–23 unless
/// routed otherwise), not QEMU's PIIX PIRQ routing.
///
/// Message-signalled interrupts are what they are on the bus, memory writes by the device:
/// an MSI/MSI-X message to a RAM address stores its 32-bit data there (how QEMU's libqos
/// observes MSI-X), and one to another address goes to whatever decodes it (nothing does at
/// 0xFEE00000 here). `msi_log` (a swiftvmm extension) lists and clears the messages sent.
public final class QTestServer: @unchecked Sendable {
    public let machine: QTestMachine
    private let output: @Sendable (String) -> Void
    private let outputLock = Mutex<Void>(())
    private struct IRQState { var intercepting: String?; var levels: [Int: Bool] = [:]; var messages: [(UInt64, UInt32)] = [] }
    private let irq = Mutex(IRQState())

    /// Largest `read`/`write`/`memset` the server serves in one command.
    public static let maxTransfer: UInt64 = 64 << 20

    /// - Parameter output: receives every line the server sends, newline included. Called
    ///   from the command thread and, for IRQ lines, from device callbacks; serialized here.
    public init(machine: QTestMachine, output: @escaping @Sendable (String) -> Void) {
        self.machine = machine
        self.output = output
        machine.machine.interrupts.observer.withLock { $0 = { [weak self] event in self?.interrupt(event) } }
    }

    private func send(_ line: String) { outputLock.withLock { _ in output(line + "\n") } }

    // MARK: Interrupts

    private func interrupt(_ event: RecordingInterrupts.Event) {
        switch event {
        case let .line(n, level):
            let report = irq.withLock { s -> Bool in
                guard s.intercepting != nil, s.levels[n, default: false] != level else { return false }
                s.levels[n] = level
                return true
            }
            if report { send("IRQ \(level ? "raise" : "lower") \(n)") }
        case let .msi(address, data):
            irq.withLock { s in
                if s.messages.count < 4096 { s.messages.append((address, data)) }
            }
            var bytes = [UInt8](repeating: 0, count: 4)
            for i in 0 ..< 4 { bytes[i] = UInt8(truncatingIfNeeded: data >> (8 * UInt32(i))) }
            busWrite(address, bytes)
        }
        // The recorder's event list would otherwise grow for the whole session.
        machine.machine.interrupts.clear()
    }

    // MARK: Commands

    /// Handles one request line (without its newline) and sends the response.
    public func handle(line rawLine: Substring) {
        var text = rawLine
        if text.last == "\r" { text = text.dropLast() }
        // No command takes more than four arguments: a line of a million words is not
        // split a million times (the rest stays in the last piece, and fails to parse).
        let words = text.split(separator: " ", maxSplits: 8, omittingEmptySubsequences: true)
        send(respond(to: words))
    }

    /// Answers a request the transport could not pass on (e.g. one too long to buffer).
    public func reject(_ response: String) { send(response) }

    private func respond(to words: [Substring]) -> String {
        guard let command = words.first else { return "FAIL Unknown command ''" }
        let args = Array(words.dropFirst())
        switch command {
        case "outb", "outw", "outl":
            guard args.count >= 2, let addr = QTestFormat.unsigned(args[0]), let value = QTestFormat.unsigned(args[1]) else {
                return "FAIL \(command) needs ADDR VALUE"
            }
            guard addr <= 0xFFFF else { return "FAIL port 0x\(String(addr, radix: 16)) is above 0xffff" }
            machine.machine.pio.write(addr, size: accessSize(command.last), value: value)
            return "OK"
        case "inb", "inw", "inl":
            guard let a = args.first, let addr = QTestFormat.unsigned(a) else { return "FAIL \(command) needs ADDR" }
            guard addr <= 0xFFFF else { return "FAIL port 0x\(String(addr, radix: 16)) is above 0xffff" }
            let value = machine.machine.pio.read(addr, size: accessSize(command.last))
            return "OK 0x" + QTestFormat.hex(value, width: 4)
        case "writeb", "writew", "writel", "writeq":
            guard args.count >= 2, let addr = QTestFormat.unsigned(args[0]), let value = QTestFormat.unsigned(args[1]) else {
                return "FAIL \(command) needs ADDR VALUE"
            }
            let size = accessSize(command.last)
            guard addr.addingReportingOverflow(UInt64(size - 1)).overflow == false else { return "FAIL range wraps past 2^64" }
            busWrite(addr, size: size, value: value)
            return "OK"
        case "readb", "readw", "readl", "readq":
            guard let a = args.first, let addr = QTestFormat.unsigned(a) else { return "FAIL \(command) needs ADDR" }
            let size = accessSize(command.last)
            guard addr.addingReportingOverflow(UInt64(size - 1)).overflow == false else { return "FAIL range wraps past 2^64" }
            return "OK 0x" + QTestFormat.hex(busRead(addr, size: size), width: 16)
        case "read", "b64read":
            guard args.count >= 2, let addr = QTestFormat.unsigned(args[0]), let len = QTestFormat.unsigned(args[1]) else {
                return "FAIL \(command) needs ADDR SIZE"
            }
            if let problem = checkTransfer(addr, len, allowEmpty: command == "b64read") { return problem }
            let bytes = busRead(addr, count: Int(len))
            return command == "read" ? "OK 0x" + QTestFormat.hexBytes(bytes) : "OK " + QTestFormat.base64(bytes)
        case "write", "b64write":
            guard args.count >= 3, let addr = QTestFormat.unsigned(args[0]), let len = QTestFormat.unsigned(args[1]) else {
                return "FAIL \(command) needs ADDR SIZE DATA"
            }
            // QEMU answers this one with ERR (and without checking anything else first).
            guard args[2].utf8.count >= 3 else { return "ERR invalid argument size" }
            if let problem = checkTransfer(addr, len, allowEmpty: true) { return problem }
            var bytes: [UInt8]
            if command == "write" {
                guard let b = QTestFormat.dataBytes(args[2], count: Int(len)) else { return "FAIL DATA is not hex" }
                bytes = b
            } else {
                // Like QEMU: data of the wrong length is truncated or zero-filled to SIZE.
                bytes = QTestFormat.unbase64(args[2])
                bytes = Array(bytes.prefix(Int(len))) + [UInt8](repeating: 0, count: max(0, Int(len) - bytes.count))
            }
            busWrite(addr, bytes)
            return "OK"
        case "memset":
            guard args.count >= 3, let addr = QTestFormat.unsigned(args[0]), let len = QTestFormat.unsigned(args[1]),
                  let pattern = QTestFormat.unsigned(args[2]) else { return "FAIL memset needs ADDR SIZE VALUE" }
            if let problem = checkTransfer(addr, len, allowEmpty: true) { return problem }
            if len > 0 { busWrite(addr, [UInt8](repeating: UInt8(truncatingIfNeeded: pattern), count: Int(len))) }
            return "OK"
        case "endianness":
            return "OK little"
        case "clock_step":
            let clock = machine.clock
            if let a = args.first {
                guard let ns = QTestFormat.signed(a) else { return "FAIL clock_step needs NS" }
                if ns > 0 { clock.advance(by: UInt64(ns)) }
            } else if let next = clock.nextDeadline, next > clock.now {
                clock.advance(to: next) // QEMU: to the next timer deadline
            } else if clock.nextDeadline != nil {
                clock.advance(by: 0)    // a timer already due fires now
            }
            return "OK \(clock.now)"
        case "clock_set":
            guard let a = args.first, let ns = QTestFormat.signed(a) else { return "FAIL clock_set needs NS" }
            if ns > 0 { machine.clock.advance(to: UInt64(ns)) } // time never goes back, as in QEMU
            return "OK \(machine.clock.now)"
        case "irq_intercept_in", "irq_intercept_out":
            guard let name = args.first else { return "FAIL \(command) needs a device" }
            guard Self.interruptControllerNames.contains(String(name)) else { return "FAIL Unknown device" }
            return irq.withLock { s in
                if let current = s.intercepting { return current == String(name) ? "OK" : "FAIL IRQ intercept already enabled" }
                s.intercepting = String(name)
                return "OK"
            }
        case "msi_log":
            let messages = irq.withLock { s in defer { s.messages.removeAll() }; return s.messages }
            return (["OK"] + messages.map { "0x\(QTestFormat.hex($0.0, width: 16)):0x\(QTestFormat.hex(UInt64($0.1), width: 8))" })
                .joined(separator: " ")
        case "module_load":
            return "FAIL"
        case "swiftvmm-action-cost":
            // Not QEMU's: the worst single guest action a device has handled so far and that
            // device's budget (ActionCostMeter), as descriptors, frames and bytes: the first
            // device over its budget, else the one with the most descriptors in an action.
            // The hostile-guest tool fails a scenario whose worst action exceeds it (issue 12).
            var reported: (worst: ActionCost, budget: ActionCost)?
            for fn in machine.machine.bus.functions {
                let (worst, budget) = fn.lock.withLock { (fn.cost.worst, fn.cost.budget) }
                if !worst.fits(budget) {
                    reported = (worst, budget)
                    break
                }
                if worst.descriptors >= reported?.worst.descriptors ?? 0 { reported = (worst, budget) }
            }
            let (w, b) = reported ?? (ActionCost(), ActionCostMeter.defaultBudget)
            return "OK \(w.descriptors) \(w.frames) \(w.bytes) \(b.descriptors) \(b.frames) \(b.bytes)"
        default:
            return "FAIL Unknown command '\(command)'"
        }
    }

    /// What `irq_intercept_in` accepts: QEMU's QOM paths for the PC's interrupt controller.
    static let interruptControllerNames: Set<String> = ["ioapic", "/machine/ioapic", "/machine/i440fx/ioapic"]

    private func accessSize(_ suffix: Character?) -> Int {
        switch suffix {
        case "w": 2
        case "l": 4
        case "q": 8
        default: 1
        }
    }

    private func checkTransfer(_ addr: UInt64, _ len: UInt64, allowEmpty: Bool) -> String? {
        if len == 0 && !allowEmpty { return "FAIL SIZE must not be 0" }
        if len > Self.maxTransfer { return "FAIL SIZE 0x\(String(len, radix: 16)) is above 0x\(String(Self.maxTransfer, radix: 16))" }
        if len > 0 && addr.addingReportingOverflow(len - 1).overflow { return "FAIL range wraps past 2^64" }
        return nil
    }

    // MARK: The system bus as the CPU sees it: RAM, else MMIO

    private func busRead(_ addr: UInt64, size: Int) -> UInt64 {
        let memory = machine.memory
        if let v = try? readRAM(memory, addr, size) { return v }
        return machine.machine.mmio.read(addr, size: size)
    }

    private func readRAM(_ memory: GuestMemory, _ addr: UInt64, _ size: Int) throws(GuestMemoryError) -> UInt64 {
        switch size {
        case 1: UInt64(try memory.load(UInt8.self, at: GuestAddress(addr)))
        case 2: UInt64(try memory.load(UInt16.self, at: GuestAddress(addr)))
        case 4: UInt64(try memory.load(UInt32.self, at: GuestAddress(addr)))
        default: try memory.load(UInt64.self, at: GuestAddress(addr))
        }
    }

    private func busWrite(_ addr: UInt64, size: Int, value: UInt64) {
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0 ..< size { bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        if machine.memory.isRAM(GuestAddress(addr), length: UInt64(size)) {
            try? machine.memory.writeBytes(bytes, at: GuestAddress(addr))
        } else {
            machine.machine.mmio.write(addr, size: size, value: value)
        }
    }

    /// Reads `count` bytes: RAM directly, anything else in naturally aligned accesses of up
    /// to 4 bytes (QEMU splits by each region's access size; 32-bit registers are the norm).
    private func busRead(_ addr: UInt64, count: Int) -> [UInt8] {
        if let bytes = try? machine.memory.readBytes(at: GuestAddress(addr), count: count) { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var cursor = addr
        while out.count < count {
            let size = chunkSize(cursor, remaining: count - out.count)
            let v = busRead(cursor, size: size)
            for i in 0 ..< size { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
            cursor &+= UInt64(size) // cannot wrap: checked by checkTransfer
        }
        return out
    }

    private func busWrite(_ addr: UInt64, _ bytes: [UInt8]) {
        if (try? machine.memory.writeBytes(bytes, at: GuestAddress(addr))) != nil { return }
        var done = 0
        var cursor = addr
        while done < bytes.count {
            let size = chunkSize(cursor, remaining: bytes.count - done)
            var v: UInt64 = 0
            for i in 0 ..< size { v |= UInt64(bytes[done + i]) << (8 * UInt64(i)) }
            busWrite(cursor, size: size, value: v)
            done += size
            cursor &+= UInt64(size)
        }
    }

    private func chunkSize(_ addr: UInt64, remaining: Int) -> Int {
        var size = 4
        while size > 1 && (addr % UInt64(size) != 0 || size > remaining) { size /= 2 }
        return size
    }
}
