#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import VMMCore

/// The device's interrupts as the client asked for them with DEVICE_SET_IRQS: one
/// eventfd per vector for INTx (index 0), MSI (1) and MSI-X (2).
///
/// INTx behaves as VFIO's: the line masks itself when it fires, so a level-triggered
/// interrupt is signalled once per client unmask; an unmask while the line is still high
/// fires again (Linux vfio_pci_intx_unmask_handler; QEMU's client unmasks after each
/// interrupt it takes through vfio_pci_intx_eoi). MSI and MSI-X vectors are signalled as
/// the device raises them: the client owns the table and masking.
final class EventFDInterrupts: InterruptController, MessageVectorSink, @unchecked Sendable {
    enum Index: UInt32, CaseIterable { case intx = 0, msi = 1, msix = 2, err = 3, req = 4 }

    private struct State {
        var fds: [[Int32]] = Array(repeating: [], count: Index.allCases.count)
        var intxLevel = false
        var intxMasked = false
        var signals: [UInt64] = Array(repeating: 0, count: Index.allCases.count)
    }
    private let state = Mutex(State())
    /// Vectors per index (INTx, MSI, MSI-X, ERR, REQ), from what the device declared.
    private(set) var vectorCounts: [Int] = Array(repeating: 0, count: Index.allCases.count)

    init() {}

    /// Called once the device exists (the controller is needed to create it).
    func declare(intx: Bool, msi: Int, msix: Int) {
        // One ERR vector: QEMU registers an eventfd for it when offered (and warns
        // "Could not enable error recovery" otherwise); this server never signals it.
        vectorCounts = [intx ? 1 : 0, msi, msix, 1, 0]
        state.withLock { s in
            for i in 0 ..< vectorCounts.count { s.fds[i] = Array(repeating: -1, count: vectorCounts[i]) }
        }
    }

    deinit { closeAll() }

    /// Signal counts per index (for tests and the robustness report).
    var signalCounts: [UInt64] { state.withLock { $0.signals } }

    // MARK: From the device (through PCIInterrupts)

    func setIRQ(_ line: Int, level: Bool) {
        state.withLock { s in
            s.intxLevel = level
            if level { Self.fireINTx(&s) }
        }
    }

    func signalMSI(address: UInt64, data: UInt32) {
        // Not reached: the function's messages are routed per vector (routeMessageVectors).
    }

    func signal(_ kind: PCIInterrupts.Mode, vector: Int) {
        let index: Index = kind == .msix ? .msix : .msi
        state.withLock { s in
            let fds = s.fds[Int(index.rawValue)]
            guard vector >= 0, vector < fds.count, fds[vector] >= 0 else { return }
            Self.kick(fds[vector])
            s.signals[Int(index.rawValue)] &+= 1
        }
    }

    private static func fireINTx(_ s: inout State) {
        guard s.intxLevel, !s.intxMasked, let fd = s.fds[0].first, fd >= 0 else { return }
        kick(fd)
        s.signals[0] &+= 1
        s.intxMasked = true
    }

    private static func kick(_ fd: Int32) {
        _ = clinux_eventfd_signal(fd)
    }

    // MARK: From the client (DEVICE_SET_IRQS)

    /// Applies one SET_IRQS. `fds` are the descriptors that came with it (taken over:
    /// stored or closed). Throws for ranges outside the device's vectors.
    func apply(_ request: VFIOUserRequest.SetIRQs, fds: [Int32]) throws(VFIOUserError) {
        if let bad = fds.first(where: { !Self.isEventFD($0) }) {
            _ = bad
            fds.forEach { _ = close($0) }
            throw .malformed("SET_IRQS descriptor is not an eventfd")
        }
        // Never block under the device lock on a descriptor the client controls.
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        guard let index = Index(rawValue: request.index) else {
            fds.forEach { _ = close($0) }
            throw .outOfRange("IRQ index \(request.index) (0-4)")
        }
        let available = vectorCounts[Int(request.index)]
        let start = Int(request.start), count = Int(request.count)
        // count 0 with DATA_NONE + TRIGGER tears the whole index down (vfio.h).
        if count == 0 {
            if case .none = request.data, request.action == .trigger {
                state.withLock { s in Self.closeIndex(&s, Int(index.rawValue)) }
                return
            }
            throw .malformed("SET_IRQS with count 0 must be DATA_NONE|ACTION_TRIGGER")
        }
        guard start < available, count <= available - start else {
            fds.forEach { _ = close($0) }
            throw .outOfRange("IRQ index \(request.index) vectors \(start)+\(count) beyond the \(available) it has")
        }
        switch (request.action, request.data) {
        case (.trigger, .eventFDs):
            state.withLock { s in
                for v in 0 ..< count {
                    let old = s.fds[Int(index.rawValue)][start + v]
                    if old >= 0 { close(old) }
                    s.fds[Int(index.rawValue)][start + v] = fds.isEmpty ? -1 : fds[v]
                }
                if index == .intx { Self.fireINTx(&s) }
            }
        case (.trigger, .none):
            state.withLock { s in
                for v in start ..< start + count { if index == .intx { Self.fireINTxAnyway(&s) } else { Self.kickVector(&s, index, v) } }
            }
        case let (.trigger, .bools(flags)):
            state.withLock { s in
                for (i, on) in flags.enumerated() where on { Self.kickVector(&s, index, start + i) }
            }
        case (.unmask, .none), (.unmask, .bools):
            guard index == .intx else { return } // messages are masked by the client itself
            state.withLock { s in
                s.intxMasked = false
                Self.fireINTx(&s)
            }
        case (.mask, .none), (.mask, .bools):
            if index == .intx { state.withLock { $0.intxMasked = true } }
        case (.mask, .eventFDs), (.unmask, .eventFDs):
            fds.forEach { _ = close($0) }
            throw .unsupported("SET_IRQS mask/unmask through an eventfd (KVM resampling) is not supported")
        }
    }

    /// Whether `fd` is an eventfd (its /proc link reads `anon_inode:[eventfd]`): anything
    /// else (a pipe nobody reads, a file) could block or fill up when signalled.
    static func isEventFD(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count)
        guard n > 0 else { return false }
        return String(decoding: buffer.prefix(n), as: UTF8.self) == "anon_inode:[eventfd]"
    }

    private static func fireINTxAnyway(_ s: inout State) {
        guard let fd = s.fds[0].first, fd >= 0 else { return }
        kick(fd)
        s.signals[0] &+= 1
    }

    private static func kickVector(_ s: inout State, _ index: Index, _ v: Int) {
        let fds = s.fds[Int(index.rawValue)]
        guard v < fds.count, fds[v] >= 0 else { return }
        kick(fds[v])
        s.signals[Int(index.rawValue)] &+= 1
    }

    private static func closeIndex(_ s: inout State, _ i: Int) {
        for v in 0 ..< s.fds[i].count where s.fds[i][v] >= 0 {
            close(s.fds[i][v])
            s.fds[i][v] = -1
        }
        if i == 0 { s.intxMasked = false }
    }

    /// The client went away: its eventfds are closed; the line state stays.
    func closeAll() {
        state.withLock { s in for i in 0 ..< s.fds.count { Self.closeIndex(&s, i) } }
    }
}
