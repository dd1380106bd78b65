import Virtio
import VMMCore

/// The virtio console PCI function: the transport with a `VirtioConsole` inside.
public typealias VirtioConsoleDevice = VirtioPCIDevice<VirtioConsole>

/// A console device (virtio 1.2 §5.3) with one port and no MULTIPORT: receiveq0 carries
/// the host's bytes to the guest, transmitq0 the guest's to the host (§5.3.2). Linux's
/// virtio_console makes the port hvc0 (`virtcons_probe` without MULTIPORT: one port, the
/// console). Where the bytes go is `ConsoleChannel`'s business.
///
/// No feature bits are offered: SIZE, MULTIPORT and EMERG_WRITE each only add a field to
/// the configuration (§5.3.4: "cols and rows are valid only if VIRTIO_CONSOLE_F_SIZE is
/// set", and so on), so the configuration is empty, as virtio-rng's.
///
/// A guest cannot buy unbounded work or memory: a transmit chain is read up to
/// `maximumChainBytes` (the rest is dropped and counted), a kick stops at the per-action
/// budget and continues from the I/O loop, and input is read only into buffers the guest
/// posted, while it has them.
public final class VirtioConsole: VirtioDevice, DeviceCounters, @unchecked Sendable {
    public static let typeName = "virtio-console"
    public static let summary = "virtio-console (virtio 1.x PCI, modern): one port, the guest's hvc0, to a file or a Unix socket"
    public static var optionHelp: [OptionHelp] { VirtioConsoleConfiguration.help }
    /// VIRTIO_ID_CONSOLE (Linux include/uapi/linux/virtio_ids.h).
    public static let deviceID: UInt16 = 3
    /// PCI_CLASS_COMMUNICATION_OTHER, as QEMU's virtio_serial_pci_class_init.
    public static let pciClassCode: UInt32 = 0x07_80_00
    /// §5.3.2: port 0's receive queue is 0, its transmit queue 1.
    static let receiveQueue = 0, transmitQueue = 1
    /// The most bytes taken from one chain either way: Linux's console writes at most a
    /// page (`hvc_alloc(…, PAGE_SIZE)`) and posts page-sized input buffers (`fill_queue`);
    /// a chain of 1,024 descriptors of 4 GiB each would otherwise be one copy of 4 TiB.
    static let maximumChainBytes = 64 << 10

    let context: VirtioDeviceContext
    let transport: VirtioTransport
    let configuration: VirtioConsoleConfiguration
    public let layout: VirtioDeviceLayout
    let channel: ConsoleChannel

    // State under context.lock.
    var chain = DescriptorChain()
    var segments: [UnsafeMutableRawBufferPointer] = []
    /// Bytes taken from the guest's transmit chains (those the host side did not take are
    /// in `droppedOutput` too), and bytes given to it.
    public internal(set) var bytesOut: UInt64 = 0
    public internal(set) var bytesIn: UInt64 = 0
    /// Chains returned unused: a transmit chain with device-writable buffers, a receive
    /// chain without, buffers that are not RAM (§5.3.6.1, §5.3.6.2).
    public internal(set) var badRequests: UInt64 = 0
    /// Output bytes the host side did not take, and bytes past `maximumChainBytes`.
    public var droppedOutput: UInt64 { channel.droppedOutput &+ truncatedOutput }
    var truncatedOutput: UInt64 = 0

    /// While a client is connected and input waits — the guest had no buffers, bus
    /// mastering was off, or the client shut its side and is parked — once a second: a
    /// parked client that closed is let go, and buffers no kick announced (Linux keeps its
    /// queue full and kicks only when it adds) start the reading again.
    static let idleInputCheckNanoseconds: UInt64 = 1_000_000_000
    lazy var idleInputCheck = DeviceTimer(clock: context.clock, lock: context.lock) { [weak self] in self?.checkIdleInput() }

    /// The rest of a transmit kick past the per-action budget, on the I/O loop.
    lazy var continuation = DeferredAction(continuing: context) { [weak self] in self?.transmit() }

    public required init(options: inout DeviceOptions, context: VirtioDeviceContext) throws {
        configuration = try VirtioConsoleConfiguration(options: &options)
        self.context = context
        transport = context.transport
        channel = try ConsoleChannel(configuration.target, lock: context.lock, loop: context.eventLoop, clock: context.clock,
                                     machineStart: context.services.resolve(MachineStart.self))
        layout = VirtioDeviceLayout(features: 0, configLength: 0, queueCount: 2,
                                    maxQueueSize: configuration.queueSize, ring: configuration.ring)
        let cost = context.cost
        channel.inputReady = { [weak self] in cost.measure { self?.receive() } }
        channel.clientConnected = { [weak self] in self?.watchIdleInput() }
    }

    public func shutdown() {
        idleInputCheck.cancel()
        channel.shutdown()
    }

    // MARK: VirtioDevice

    public func acceptsFeatures(_ features: UInt64) -> Bool { true }
    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    /// Linux fills receiveq0 right after DRIVER_OK (`add_port`, `fill_queue`) and kicks.
    public func activate() {
        transmit()
        channel.setWantsInput(true)
    }

    /// Input stops until the new driver posts buffers; the client stays connected.
    public func reset() { stopInput() }

    private func stopInput() {
        channel.setWantsInput(false)
        watchIdleInput()
    }

    private func watchIdleInput() {
        if channel.isConnected, !channel.isWaitingForInput, !idleInputCheck.isArmed {
            idleInputCheck.arm(after: Self.idleInputCheckNanoseconds)
        }
    }

    private func checkIdleInput() {
        guard channel.isConnected, !channel.isWaitingForInput else { return }
        channel.dropIfClosed()
        if channel.isConnected, transport.isLive, let queue = transport.queue(Self.receiveQueue), queue.enableNotifications() {
            channel.setWantsInput(true)
        } else {
            watchIdleInput()
        }
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.transmitQueue: transmit()
        // New input buffers: read the client again (the loop calls `receive`).
        case Self.receiveQueue: channel.setWantsInput(true)
        default: break
        }
    }

    // MARK: Guest to host

    /// Sends what the guest queued: at most the per-action budget's worth now, the rest
    /// from the I/O loop. Each chain comes back at once with length 0 (§5.3.6.2: the
    /// device only reads transmit buffers), whether the host took its bytes or not.
    func transmit() {
        context.serveChains(of: Self.transmitQueue, into: &chain, continuation: continuation) { chain in
            send(chain)
            return 0
        }
    }

    private func send(_ chain: DescriptorChain) {
        if let why = context.oneWayBuffers(of: chain, writable: false, into: &segments) {
            bad("transmit \(why)")
            return
        }
        var left = Self.maximumChainBytes
        var whole = true
        for segment in segments {
            let n = min(segment.count, left)
            if !whole {
                channel.drop(n)
            } else if n > 0 {
                whole = channel.write(UnsafeRawBufferPointer(rebasing: segment[0 ..< n]))
            }
            left -= n
        }
        let length = Int(clamping: chain.readableLength)
        let sent = min(length, Self.maximumChainBytes)
        truncatedOutput &+= UInt64(length - sent)
        bytesOut &+= UInt64(sent)
        context.cost.bytes(sent)
    }

    // MARK: Host to guest

    /// On the loop, with the client readable: fills the guest's receive buffers from it
    /// until it has nothing more, the guest has no buffers left (reading then waits for
    /// the next kick of receiveq0) or the action's budget is spent (the loop calls again).
    func receive() {
        guard transport.isLive, let queue = transport.queue(Self.receiveQueue) else {
            stopInput()
            return
        }
        let cost = context.cost
        do {
            while !cost.shouldDefer, channel.isConnected {
                guard try queue.pop(into: &chain) else {
                    // Out of buffers: wait for the driver's kick (asked for here), unless
                    // more came meanwhile.
                    if !queue.enableNotifications() { stopInput() }
                    break
                }
                cost.descriptors(chain.descriptorCount)
                guard let read = fill(chain) else {
                    try queue.addUsed(head: chain.head, length: 0)
                    continue
                }
                guard read > 0 else {
                    queue.unpop(1)   // nothing to read now: the buffer waits for the next bytes
                    break
                }
                try queue.addUsed(head: chain.head, length: UInt32(read))
                bytesIn &+= UInt64(read)
                cost.bytes(read)
            }
        } catch {
            transport.fail(queue, error)
            return
        }
        transport.completeUsed(queue)
    }

    /// Reads from the client into the chain's buffers; the byte count, or nil for a chain
    /// that cannot take input (it goes back empty).
    private func fill(_ chain: DescriptorChain) -> Int? {
        if let why = context.oneWayBuffers(of: chain, writable: true, into: &segments) {
            bad("receive \(why)")
            return nil
        }
        var total = 0
        for segment in segments where total < Self.maximumChainBytes {
            let room = min(segment.count, Self.maximumChainBytes - total)
            let n = channel.read(into: UnsafeMutableRawBufferPointer(rebasing: segment[0 ..< room]))
            total += n
            if n < room { break }
        }
        return total
    }

    public var counters: [(name: String, value: UInt64)] {
        [("bytes-out", bytesOut), ("bytes-in", bytesIn), ("dropped-output", droppedOutput),
         ("bad-requests", badRequests), ("connections", channel.connections)]
    }

    private func bad(_ why: @autoclosure () -> String) {
        badRequests &+= 1
        context.guestLog.warning("virtio-console.bad-request", "\(why()); returned empty")
    }
}
