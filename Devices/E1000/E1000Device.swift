import Logging
import VMMCore
import VMMNet

/// Intel 82540EM Gigabit Ethernet (PCI 8086:100E), the NIC QEMU calls `e1000`, as
/// described by the Intel 8254x Software Developer's Manual (SDM). Unmodified guest
/// drivers (Linux `e1000`, FreeBSD `em`) use it.
///
/// BAR0 is the 128 KiB register space, BAR1 the 8-byte IOADDR/IODATA window (§13.2.1).
/// The files beside this one follow the manual's chapters: registers, EEPROM, PHY,
/// interrupts and moderation, receive, transmit, statistics, filters.
///
/// Threading: register accesses arrive with `context.lock` held (the bus takes it);
/// frames and link changes from the backend and timer callbacks take it themselves.
public final class E1000Device: PCIDevice, FrameReceiver, DeviceCounters, @unchecked Sendable {
    public static let typeName = "e1000"
    public static let summary = "Intel 82540EM gigabit Ethernet (Linux e1000, FreeBSD em)"
    public static let optionHelp = [
        OptionHelp("mac", "52:54:00:12:34:56", "the NIC's address (default 52:54:00:12:34:56 + index)"),
        OptionHelp("net", "BACKEND", "network backend (tap:NAME, vde:PATH, user, stream:…); see `swiftvmm backends`"),
    ]

    static let vendorID: UInt16 = 0x8086
    static let deviceID: UInt16 = 0x100E
    static let registerSpaceSize: UInt64 = 128 << 10
    static let ioWindowSize: UInt64 = 8

    let context: PCIDeviceContext
    let backend: LinkControl
    public let mac: MACAddress

    /// Registers without behaviour of their own, stored as written at their offsets. The
    /// whole 128 KiB register space, of which a driver writes a few pages: zero until written.
    let registers = ZeroFilledPages(byteCount: Int(E1000Device.registerSpaceSize))
    var eeprom: E1000EEPROM
    var phy = M88E1011PHY()
    var statistics = E1000Statistics()
    var filter: E1000ReceiveFilter
    var guestErrors = E1000GuestErrorCounts()
    /// IOADDR (§13.2.1): which register IODATA reaches.
    var ioAddress: UInt32 = 0

    // Interrupts (Interrupts.swift).
    var interruptAsserted = false
    var nextInterruptAllowed: UInt64 = 0
    // Constants made in `init`, not `lazy var`s: the data paths use them per frame, and a
    // lazy property's getter hands out a retained reference each time (a retain and
    // release were ~15 % of an e1000 receive in memory).
    let throttleTimer: DeviceTimer
    let receiveDelay: InterruptDelay
    let transmitDelay: InterruptDelay

    /// The link as STATUS last reported it; a change raises LSC.
    var reportedLinkUp = false
    /// We refused a frame for want of descriptors: tell the backend when RDT moves.
    var receiveStalled = false

    // Data paths (Receive.swift, Transmit.swift): buffers allocated once.
    var receiveBuffer: FrameScratchBuffer
    var transmit = TransmitState()
    let transmitBuffer: FrameScratchBuffer
    let segmentBuffer: FrameScratchBuffer
    /// The scatter list a frame goes to the backend in, empty between frames: the copied
    /// head if any, then the pieces left in guest memory (TransmitAssembly.swift). Its
    /// storage is reserved once, never per frame.
    var sendSegments: [UnsafeRawBufferPointer] = []
    /// The rest of a ring pass past the per-action budget (Transmit.swift).
    lazy var transmitContinuation = DeferredAction(continuing: context) { [weak self] in self?.transmitPackets() }

    public init(options: inout DeviceOptions, context: PCIDeviceContext) throws {
        self.context = context
        mac = try options.takeMAC() ?? MACAddress.defaultNIC(index: context.instanceIndex)
        backend = try context.openNetworkBackend(&options)
        eeprom = E1000EEPROM(mac: mac)
        filter = E1000ReceiveFilter(mac: mac)
        receiveBuffer = FrameScratchBuffer(capacity: Receive.maxFrameLength + Receive.fcsLength)
        transmitBuffer = FrameScratchBuffer(capacity: Transmit.maxPacketLength + HeaderSize.vlanTag)
        segmentBuffer = FrameScratchBuffer(capacity: SoftwareOffload.recommendedBufferSize)
        sendSegments.reserveCapacity(1 + Transmit.maxPieces)
        let target = TimerTarget()
        throttleTimer = Self.makeTimer(context, target) { $0.updateInterrupt() }
        receiveDelay = InterruptDelay(packetTimer: Self.makeTimer(context, target) { $0.receiveTimerExpired() },
                                      absoluteTimer: Self.makeTimer(context, target) { $0.receiveTimerExpired() })
        transmitDelay = InterruptDelay(packetTimer: Self.makeTimer(context, target) { $0.transmitTimerExpired() },
                                       absoluteTimer: Self.makeTimer(context, target) { $0.transmitTimerExpired() })
        target.device = self

        context.config.setIdentity(PCIIdentity(
            vendorID: Self.vendorID, deviceID: Self.deviceID,
            subsystemVendorID: E1000EEPROM.subsystemVendorID, subsystemID: E1000EEPROM.subsystemID,
            revision: 0, classCode: 0x02_00_00))
        context.config.declareBAR(0, .memory32(size: Self.registerSpaceSize))
        context.config.declareBAR(1, .io(size: Self.ioWindowSize))
        context.interrupts.useINTx()
        context.interrupts.addMSI(vectors: 1)

        resetRegisters()
        reportedLinkUp = linkIsUp
        backend.setReceiveOffloads([])
        backend.start(receiver: self)
    }

    /// A timer calling `action` on the device once `target` points at it (the end of
    /// `init`); it holds the device weakly, so a device dropped with a timer armed goes.
    private static func makeTimer(_ context: PCIDeviceContext, _ target: TimerTarget,
                                  _ action: @escaping (E1000Device) -> Void) -> DeviceTimer {
        DeviceTimer(clock: context.clock, lock: context.lock) {
            if let device = target.device { action(device) }
        }
    }

    private final class TimerTarget {
        weak var device: E1000Device?
    }

    // MARK: PCIDevice

    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        switch bar {
        case 0: return readLanes(offset: offset, size: size, limit: Self.registerSpaceSize) { readRegister($0) }
        case 1: return readLanes(offset: offset, size: size, limit: Self.ioWindowSize) { ioRead($0) }
        default: return 0
        }
    }

    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        switch bar {
        case 0: writeLanes(offset: offset, size: size, value: value, limit: Self.registerSpaceSize) { writeRegister($0, $1, lanes: $2) }
        case 1: writeLanes(offset: offset, size: size, value: value, limit: Self.ioWindowSize) { ioWrite($0, $1, lanes: $2) }
        default: break
        }
    }

    /// The command register's bus-master bit turning on lets the transmitter fetch what
    /// the driver queued while it was off (`transmitPackets` stops without it, and would
    /// otherwise wait for the next TDT or TCTL write). The core stores the write.
    public func configWrite(offset: Int, size: Int, value: UInt32) -> Bool {
        guard offset <= PCIConfigOffset.command, offset + size > PCIConfigOffset.command,
              !context.config.busMasterEnabled else { return false }
        context.config.write(offset: offset, size: size, value: value)
        if context.config.busMasterEnabled { transmitPackets() }
        return true
    }

    /// Machine reset: the whole chip including the PHY returns to power-on state.
    public func reset() {
        phy.reset()
        deviceReset()
    }

    public func shutdown() {
        cancelTimers()
        backend.stop()
    }

    // MARK: I/O window (§13.2.1)

    /// IOADDR at 0 (register offset, bits 16:0 meaningful), IODATA at 4 (that register).
    private func ioRead(_ offset: Int) -> UInt32 {
        offset == 0 ? ioAddress : readRegister(Int(ioAddress & 0x1_FFFC))
    }

    private func ioWrite(_ offset: Int, _ value: UInt32, lanes: UInt32) {
        if offset == 0 {
            ioAddress = (ioAddress & ~lanes) | (value & lanes)
        } else {
            writeRegister(Int(ioAddress & 0x1_FFFC), value, lanes: lanes)
        }
    }

    // MARK: Access sizes

    /// Registers are 32 bits (§13.3). A narrower access reads the whole register (with
    /// its side effects, as the hardware does) and returns the addressed bytes; an 8-byte
    /// access is two dword accesses.
    private func readLanes(offset: UInt64, size: Int, limit: UInt64, _ read: (Int) -> UInt32) -> UInt64 {
        guard [1, 2, 4, 8].contains(size), offset < limit, UInt64(size) <= limit - offset else { return 0 }
        var result: UInt64 = 0
        var done = 0
        while done < size {
            let at = offset + UInt64(done)
            let dword = Int(at & ~3), shift = Int(at & 3)
            let n = min(4 - shift, size - done)
            let v = UInt64(read(dword)) >> UInt64(shift * 8)
            let mask: UInt64 = n == 8 ? .max : (1 << UInt64(n * 8)) - 1
            result |= (v & mask) << UInt64(done * 8)
            done += n
        }
        return result
    }

    /// A narrower write touches only its byte lanes: `lanes` tells the register which
    /// bits were written (a register that stores merges; a command register acts only on them).
    private func writeLanes(offset: UInt64, size: Int, value: UInt64, limit: UInt64, _ write: (Int, UInt32, UInt32) -> Void) {
        guard [1, 2, 4, 8].contains(size), offset < limit, UInt64(size) <= limit - offset else { return }
        var done = 0
        while done < size {
            let at = offset + UInt64(done)
            let dword = Int(at & ~3), shift = Int(at & 3)
            let n = min(4 - shift, size - done)
            let bits = UInt32(truncatingIfNeeded: (UInt64(1) << UInt64(n * 8)) - 1) << UInt32(shift * 8)
            let v = UInt32(truncatingIfNeeded: (value >> UInt64(done * 8)) << UInt64(shift * 8)) & bits
            write(dword, v, bits)
            done += n
        }
    }

    // MARK: Reset and link

    /// CTRL.RST (§13.4.1): everything but PCI configuration and the PHY goes back to its
    /// power-on value, the EEPROM's address is reloaded into RAL0/RAH0, and the link is
    /// re-evaluated. (QEMU's model only clears the RST bit.)
    func deviceReset() {
        cancelTimers()
        resetRegisters()
        if interruptAsserted {
            interruptAsserted = false
            context.interrupts.setINTx(false)
        }
        nextInterruptAllowed = 0
        reportedLinkUp = linkIsUp
        if receiveStalled {
            // The receiver is off now: what the backend holds is offered again and held
            // again until the driver turns the receiver on (Receive.swift).
            receiveStalled = false
            backend.resumeReceive()
        }
    }

    private func resetRegisters() {
        registers.zero()
        setReg(Reg.ctrl, Ctrl.powerOn)
        setReg(Reg.tctl, Tctl.powerOn)
        setReg(Reg.rxcsum, RxCsum.ipOffload | RxCsum.tcpUDPOffload)
        setReg(Reg.vet, UInt32(EtherType.vlan))
        setReg(Reg.pba, 0x0010_0030)          // 48 KiB receive, 16 KiB transmit packet buffer
        setReg(Reg.ledctl, 0x0706_8302)       // §13.4.34 power-on LED modes
        setReg(Reg.txcw, 0x0000_01A0)         // §13.4.14: full duplex and pause advertised
        setReg(Reg.mdic, MDIC.ready)
        eeprom = E1000EEPROM(mac: mac)
        filter = E1000ReceiveFilter(mac: mac)
        statistics.clear()
        transmit.reset()
    }

    private func cancelTimers() {
        throttleTimer.cancel()
        receiveDelay.cancel()
        transmitDelay.cancel()
    }

    /// The link STATUS reports: the backend's link, through a PHY that is powered up.
    var linkIsUp: Bool { backend.isLinkUp && !phy.isPoweredDown }

    /// PHY loopback (PHY control bit 14, §13.5.1) or MAC loopback (RCTL.LBM = 01,
    /// §13.4.22): transmitted frames come back on the receive ring and not to the wire, and
    /// frames from the wire are not received. Linux's ethtool loopback self-test
    /// (e1000_integrated_phy_loopback, e1000_run_loopback_test) counts on it.
    var loopbackActive: Bool { phy.isLoopback || (reg(Reg.rctl) >> 6) & 0x3 == 0x1 }

    /// VET (SDM §13.4, VLAN Ether Type) names the TPID of an 802.1Q tag for recognition, stripping and
    /// insertion. Only 0x8100 is modelled: Linux's e1000_init_hw writes 0 on the 82540
    /// and e1000_reset then 0x8100; with any other value frames are treated as untagged.
    var vlanTagsRecognized: Bool { reg(Reg.vet) & 0xFFFF == UInt32(EtherType.vlan) }

    /// Raises LSC when what STATUS reports changed (§13.4.17).
    func linkMayHaveChanged() {
        let up = linkIsUp
        guard up != reportedLinkUp else { return }
        reportedLinkUp = up
        raise(Cause.lsc)
    }

    // MARK: FrameReceiver (backend → device, on the I/O loop)

    /// The backend's frames, all under one hold of the lock; stops at the first the ring
    /// has no room for (the backend keeps it and those after it).
    public func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        context.lock.withLock {
            context.cost.measure {
                // In loopback the PHY is cut off from the line: the wire's frames are lost.
                guard !loopbackActive else { return frames.count }
                var delivery = receiveDelivery(looped: false)
                let taken = frames.acceptedPrefix { receiveFrame($0.bytes, in: &delivery) }
                finishReceiving(delivery)
                return taken
            }
        }
    }

    public func linkStateChanged(up _: Bool) {
        context.lock.withLock { linkMayHaveChanged() }   // reads the link: a notice may be stale
    }

    // MARK: Register storage helpers

    /// `offset` is inside BAR 0 (`readLanes`/`writeLanes` checked it); an aligned dword.
    @inline(__always) func reg(_ offset: Int) -> UInt32 {
        guard offset >= 0, offset < Int(Self.registerSpaceSize) else { return 0 }
        return registers.bytes.load(fromByteOffset: offset & ~3, as: UInt32.self)
    }
    @inline(__always) func setReg(_ offset: Int, _ value: UInt32) {
        guard offset >= 0, offset < Int(Self.registerSpaceSize) else { return }
        registers.bytes.storeBytes(of: value, toByteOffset: offset & ~3, as: UInt32.self)
    }

    /// The guest's mistakes the device survived, by kind (those seen at least once).
    public var counters: [(name: String, value: UInt64)] { guestErrors.seen }

    func guestError(_ kind: E1000GuestError, _ message: @autoclosure () -> String) {
        guestErrors.record(kind)
        context.guestLog.warning("e1000.\(kind)", message())
    }
}
