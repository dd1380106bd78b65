import Logging

/// A function's interrupt machinery, owned by the core so no device re-implements it:
/// INTx with level semantics, an MSI capability, and an MSI-X capability whose table and
/// pending-bit array the core emulates (a vector raised while masked is remembered in
/// the PBA and delivered when unmasked — PCI 3.0 §6.8.2.9; hyperkit drops these).
///
/// Devices only call `raise(vector:)` and `setINTx(_:)`, and look at `mode` to decide
/// between a message and their INTx fallback.
public final class PCIInterrupts: @unchecked Sendable {
    public enum Mode: Sendable, Equatable { case intx, msi, msix }

    let config: PCIConfigSpace
    private let log: RateLimitedLogger
    var lines: SharedIRQLines?
    /// The interrupt line (GSI) the bus routed INTA to.
    public internal(set) var intxLine: Int?
    private var intxRequested = false
    private var intxDriven = false

    private var msi: MSIState?
    public private(set) var msix: MSIXTable?

    init(config: PCIConfigSpace, log: RateLimitedLogger) {
        self.config = config
        self.log = log
    }

    // MARK: Declaring what the device has

    /// The device uses INTA (pin 1).
    public func useINTx() { config.interruptPin = 1 }

    /// Adds an MSI capability with `vectors` (1, 2, 4, 8, 16 or 32) messages, 64-bit
    /// addressing and per-vector masking (PCI 3.0 §6.8.1).
    @discardableResult
    public func addMSI(vectors: Int) -> Bool {
        guard msi == nil, [1, 2, 4, 8, 16, 32].contains(vectors) else { return false }
        let mmc = UInt16(vectors.trailingZeroBitCount)
        let control: UInt16 = (mmc << 1) | (1 << 7) | (1 << 8)
        var body = [UInt8](repeating: 0, count: 22)
        body[0] = UInt8(truncatingIfNeeded: control); body[1] = UInt8(control >> 8)
        var mask = [UInt8](repeating: 0, count: 22)
        mask[0] = 0x71 // enable + multiple message enable
        for i in 2 ..< 10 { mask[i] = 0xFF }     // address low/high
        mask[2] = 0xFC                           // address is dword aligned
        mask[10] = 0xFF; mask[11] = 0xFF         // data
        for i in 14 ..< 18 { mask[i] = 0xFF }    // mask bits
        guard let off = config.addCapability(id: 0x05, body: body, writeMask: mask) else { return false }
        msi = MSIState(offset: off, vectors: vectors)
        config.onCapabilityWrite(off ..< off + 24) { [weak self] _, _ in self?.msiConfigWritten() }
        return true
    }

    /// Adds an MSI-X capability with `vectors` table entries; the table and PBA live in
    /// the given BARs at the given (8-byte aligned) offsets (PCI 3.0 §6.8.2).
    @discardableResult
    public func addMSIX(vectors: Int, tableBAR: Int, tableOffset: UInt64, pbaBAR: Int, pbaOffset: UInt64) -> Bool {
        guard msix == nil, (1 ... 2048).contains(vectors), (0 ..< 6).contains(tableBAR), (0 ..< 6).contains(pbaBAR),
              tableOffset & 7 == 0, pbaOffset & 7 == 0, tableOffset <= UInt32.max, pbaOffset <= UInt32.max else { return false }
        let control = UInt16(vectors - 1)
        let tbl = UInt32(tableOffset) | UInt32(tableBAR), pba = UInt32(pbaOffset) | UInt32(pbaBAR)
        var body: [UInt8] = [UInt8(truncatingIfNeeded: control), UInt8(control >> 8)]
        for v in [tbl, pba] { for i in 0 ..< 4 { body.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        var mask = [UInt8](repeating: 0, count: body.count)
        mask[1] = 0xC0 // enable, function mask
        guard let off = config.addCapability(id: 0x11, body: body, writeMask: mask) else { return false }
        msix = MSIXTable(capabilityOffset: off, vectors: vectors, tableBAR: tableBAR, tableOffset: tableOffset,
                         pbaBAR: pbaBAR, pbaOffset: pbaOffset)
        config.onCapabilityWrite(off ..< off + 4) { [weak self] _, _ in self?.msixControlWritten() }
        return true
    }

    /// Vectors of the MSI capability (0 without one) and of the MSI-X table (0 without one).
    public var msiVectorCount: Int { msi?.vectors ?? 0 }
    public var msixVectorCount: Int { msix?.vectors ?? 0 }

    // MARK: What devices call

    public var mode: Mode {
        if let x = msix, x.enabled(in: config) { return .msix }
        if let m = msi, m.enabled(in: config) { return .msi }
        return .intx
    }

    /// Signals message vector `vector` (MSI-X entry, or MSI message number). In INTx
    /// mode this does nothing: the device drives `setINTx` itself.
    public func raise(vector: Int) {
        switch mode {
        case .msix: msixRaise(vector)
        case .msi: msiRaise(vector)
        case .intx: break
        }
    }

    /// The device's INTx output. The pin follows it unless the command register's
    /// Interrupt Disable bit is set or the function uses MSI/MSI-X (PCI 3.0 §6.8.1.3).
    public func setINTx(_ level: Bool) {
        intxRequested = level
        refreshINTx()
    }

    // MARK: Core internals

    func refreshINTx() {
        config.setInterruptStatus(intxRequested)
        let drive = intxRequested && config.interruptPin != 0 && mode == .intx && !config.command.contains(.interruptDisable)
        guard drive != intxDriven else { return }
        intxDriven = drive
        if let line = intxLine { lines?.set(line: line, source: ObjectIdentifier(self), level: drive) }
    }

    var controller: InterruptController?
    /// Set by platforms that deliver messages per vector (vfio-user); nil under KVM and in tests.
    var vectorSink: MessageVectorSink?

    private func send(address: UInt64, data: UInt32) {
        // A message is a memory write by the function: without bus mastering it cannot happen.
        guard config.busMasterEnabled else {
            log.debug("msi.no-bus-master", "dropped MSI to 0x\(String(address, radix: 16)): bus mastering is off")
            return
        }
        controller?.signalMSI(address: address, data: data)
    }

    // MSI

    private func msiRaise(_ vector: Int) {
        guard let m = msi else { return }
        let enabled = m.enabledVectors(in: config)
        guard vector >= 0, vector < enabled else {
            log.debug("msi.bad-vector", "vector \(vector) beyond the \(enabled) MSI vectors enabled")
            return
        }
        if let sink = vectorSink {
            if config.busMasterEnabled { sink.signal(.msi, vector: vector) }
            return
        }
        if m.masked(vector, in: config) {
            m.setPending(vector, true, in: config)
        } else {
            send(address: m.address(in: config), data: m.data(in: config, vector: vector))
        }
    }

    private func msiConfigWritten() {
        guard let m = msi else { return }
        refreshINTx()
        guard m.enabled(in: config) else { return }
        for v in 0 ..< m.enabledVectors(in: config) where m.pending(v, in: config) && !m.masked(v, in: config) {
            m.setPending(v, false, in: config)
            send(address: m.address(in: config), data: m.data(in: config, vector: v))
        }
    }

    // MSI-X

    private func msixRaise(_ vector: Int) {
        guard let x = msix else { return }
        guard vector >= 0, vector < x.vectors else {
            log.debug("msix.bad-vector", "vector \(vector) beyond the table's \(x.vectors) entries")
            return
        }
        if let sink = vectorSink {
            if config.busMasterEnabled { sink.signal(.msix, vector: vector) }
            return
        }
        if x.functionMasked(in: config) || x.entryMasked(vector) {
            x.setPending(vector, true)
        } else {
            let (a, d) = x.message(vector)
            send(address: a, data: d)
        }
    }

    private func msixControlWritten() {
        refreshINTx()
        deliverUnmaskedPending()
    }

    func deliverUnmaskedPending() {
        guard let x = msix, x.enabled(in: config), !x.functionMasked(in: config) else { return }
        for v in 0 ..< x.vectors where x.isPending(v) && !x.entryMasked(v) {
            x.setPending(v, false)
            let (a, d) = x.message(v)
            send(address: a, data: d)
        }
    }

    /// Handles a BAR access that falls in the MSI-X table or PBA; nil if it does not. The
    /// bus asks before the device; so does a device that forwards BAR accesses from a
    /// config-space window (virtio's PCI_CFG capability, which reaches every BAR region).
    public func msixRead(bar: Int, offset: UInt64, size: Int) -> UInt64? {
        msix?.read(bar: bar, offset: offset, size: size)
    }

    /// The write counterpart of `msixRead`: false when the access is not the table's or PBA's.
    public func msixWrite(bar: Int, offset: UInt64, size: Int, value: UInt64) -> Bool {
        guard let x = msix, x.write(bar: bar, offset: offset, size: size, value: value) else { return false }
        deliverUnmaskedPending()
        return true
    }

    /// Back to power-on state (function reset): capabilities disabled, table masked.
    func reset() {
        msi?.reset(in: config)
        msix?.reset()
        msix?.resetControl(in: config)
        intxRequested = false
        refreshINTx()
    }
}
