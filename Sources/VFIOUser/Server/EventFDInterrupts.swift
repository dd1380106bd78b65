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
        var fds: [[ClientEventFD?]] = Array(repeating: [], count: Index.allCases.count)
        var intxLevel = false
        var intxMasked = false
        var signals: [UInt64] = Array(repeating: 0, count: Index.allCases.count)
    }
    private let state = Mutex(State())
    /// Writes the eventfds, off the device's lock and the I/O loop (EventFDSignaller).
    private let signaller: EventFDSignaller
    /// Vectors per index (INTx, MSI, MSI-X, ERR, REQ), from what the device declared.
    private(set) var vectorCounts: [Int] = Array(repeating: 0, count: Index.allCases.count)

    init() throws(VFIOUserError) { signaller = try EventFDSignaller() }

    /// Called once the device exists (the controller is needed to create it).
    func declare(intx: Bool, msi: Int, msix: Int) {
        // One ERR vector: QEMU registers an eventfd for it when offered (and warns
        // "Could not enable error recovery" otherwise); this server never signals it.
        vectorCounts = [intx ? 1 : 0, msi, msix, 1, 0]
        state.withLock { s in
            for i in 0 ..< vectorCounts.count { s.fds[i] = Array(repeating: nil, count: vectorCounts[i]) }
        }
    }

    deinit { stop() }

    /// The server is stopping: the signalling thread ends.
    func stop() {
        closeAll()
        signaller.stop()
    }

    /// Signal counts per index (for tests and the robustness report).
    var signalCounts: [UInt64] { state.withLock { $0.signals } }

    // MARK: From the device (through PCIInterrupts)

    func setIRQ(_ line: Int, level: Bool) {
        state.withLock { s in
            s.intxLevel = level
            if level { fireINTx(&s) }
        }
    }

    func signalMSI(address: UInt64, data: UInt32) {
        // Not reached: the function's messages are routed per vector (routeMessageVectors).
    }

    func signal(_ kind: PCIInterrupts.Mode, vector: Int) {
        let index: Index = kind == .msix ? .msix : .msi
        state.withLock { s in
            let fds = s.fds[Int(index.rawValue)]
            guard vector >= 0, vector < fds.count, let target = fds[vector] else { return }
            signaller.signal(target)
            s.signals[Int(index.rawValue)] &+= 1
        }
    }

    private func fireINTx(_ s: inout State) {
        guard s.intxLevel, !s.intxMasked, let first = s.fds[0].first, let target = first else { return }
        signaller.signal(target)
        s.signals[0] &+= 1
        s.intxMasked = true
    }

    // MARK: From the client (DEVICE_SET_IRQS)

    /// Applies one SET_IRQS. `fds` are the descriptors that came with it (taken over:
    /// stored or closed). Throws for ranges outside the device's vectors.
    func apply(_ request: VFIOUserRequest.SetIRQs, fds: [Int32]) throws(VFIOUserError) {
        if let bad = fds.first(where: { !Self.isEventFD($0) }) {
            _ = bad
            DescriptorCloser.shared.close(fds)
            throw .malformed("SET_IRQS descriptor is not an eventfd")
        }
        // A client that keeps them so never blocks even the signalling thread (one
        // that clears the flag again blocks only that thread: EventFDSignaller).
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        guard let index = Index(rawValue: request.index) else {
            DescriptorCloser.shared.close(fds)
            throw .outOfRange("IRQ index \(request.index) (0-4)")
        }
        let available = vectorCounts[Int(request.index)]
        let start = Int(request.start), count = Int(request.count)
        // count 0 (and start 0) with DATA_NONE + TRIGGER tears the whole index down (vfio.h).
        if count == 0 {
            if case .none = request.data, request.action == .trigger, start == 0 {
                state.withLock { s in signaller.withdraw(Self.closeIndex(&s, Int(index.rawValue))) }
                return
            }
            throw .malformed("SET_IRQS with count 0 must be DATA_NONE|ACTION_TRIGGER with start 0")
        }
        guard start < available, count <= available - start else {
            DescriptorCloser.shared.close(fds)
            throw .outOfRange("IRQ index \(request.index) vectors \(start)+\(count) beyond the \(available) it has")
        }
        switch (request.action, request.data) {
        case (.trigger, .eventFDs):
            state.withLock { s in
                var replaced: [ClientEventFD] = []
                for v in 0 ..< count {
                    if let old = s.fds[Int(index.rawValue)][start + v] { replaced.append(old) }
                    s.fds[Int(index.rawValue)][start + v] = fds.isEmpty ? nil : ClientEventFD(fds[v])
                }
                // A replaced eventfd leaves the signal queue (closed unless being written).
                signaller.withdraw(replaced)
                if index == .intx { fireINTx(&s) }
            }
        case (.trigger, .none):
            state.withLock { s in
                for v in start ..< start + count { if index == .intx { fireINTxAnyway(&s) } else { kickVector(&s, index, v) } }
            }
        case let (.trigger, .bools(flags)):
            state.withLock { s in
                for (i, on) in flags.enumerated() where on { kickVector(&s, index, start + i) }
            }
        case (.unmask, .none), (.unmask, .bools), (.mask, .none), (.mask, .bools):
            guard index == .intx else { return } // messages are masked by the client itself
            // With DATA_BOOL only a true entry acts (vfio.h: false leaves the vector alone).
            if case let .bools(flags) = request.data, flags.first != true { return }
            state.withLock { s in
                if request.action == .unmask {
                    s.intxMasked = false
                    fireINTx(&s)
                } else {
                    s.intxMasked = true
                }
            }
        case (.mask, .eventFDs), (.unmask, .eventFDs):
            DescriptorCloser.shared.close(fds)
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

    private func fireINTxAnyway(_ s: inout State) {
        guard let first = s.fds[0].first, let target = first else { return }
        signaller.signal(target)
        s.signals[0] &+= 1
    }

    private func kickVector(_ s: inout State, _ index: Index, _ v: Int) {
        let fds = s.fds[Int(index.rawValue)]
        guard v < fds.count, let target = fds[v] else { return }
        signaller.signal(target)
        s.signals[Int(index.rawValue)] &+= 1
    }

    /// Lets go of an index's eventfds; returns them, for `EventFDSignaller.withdraw`.
    private static func closeIndex(_ s: inout State, _ i: Int) -> [ClientEventFD] {
        let released = s.fds[i].compactMap { $0 }
        for v in 0 ..< s.fds[i].count { s.fds[i][v] = nil }
        if i == 0 { s.intxMasked = false }
        return released
    }

    /// The client went away: its eventfds are let go, and a write the client is blocking
    /// is interrupted; the line state stays.
    func closeAll() {
        state.withLock { s in for i in 0 ..< s.fds.count { _ = Self.closeIndex(&s, i) } }
        signaller.abandon()
    }
}
