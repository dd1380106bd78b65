import Virtio
import VMMCore

/// The virtio-rng PCI function: the transport with a `VirtioRng` inside.
public typealias VirtioRngDevice = VirtioPCIDevice<VirtioRng>

/// An entropy device (virtio 1.2 §5.4): one request queue of device-writable buffers,
/// which the device fills with random bytes from the host (`EntropySource`) and returns
/// with the number of bytes written. No feature bits, no configuration (§5.4.3, §5.4.4).
/// Linux's virtio_rng keeps one 64-byte buffer posted and feeds what comes back to the
/// kernel's pool as a hardware RNG (`virtio_read`, hwrng quality 1000), so a guest
/// without it starves for entropy at boot.
///
/// A guest cannot buy unbounded work or host entropy: a request gets at most
/// `maximumRequestBytes` (§5.4.6.1: the device "MAY use less than the entire buffer
/// length"), a kick stops at the per-action budget and continues from the I/O loop, and
/// `max-bytes`/`period` cap the rate as QEMU's do: past the quota, requests wait on the
/// ring for the next period.
public final class VirtioRng: VirtioDevice, DeviceCounters, @unchecked Sendable {
    public static let typeName = "virtio-rng"
    public static let summary = "virtio-rng (virtio 1.x PCI, modern): entropy from the host's getrandom, optional rate limit"
    public static var optionHelp: [OptionHelp] { VirtioRngConfiguration.help }
    /// VIRTIO_ID_RNG (Linux include/uapi/linux/virtio_ids.h).
    public static let deviceID: UInt16 = 4
    /// PCI_CLASS_OTHERS (0xff), as QEMU's virtio_rng_pci_class_init.
    public static let pciClassCode: UInt32 = 0xFF_00_00
    /// The most bytes one request is given: Linux asks for 64 (`virtrng_info.data`); a
    /// chain of 1,024 descriptors of 4 GiB each would otherwise be one getrandom of 4 TiB.
    static let maximumRequestBytes: UInt64 = 64 << 10

    let context: VirtioDeviceContext
    let transport: VirtioTransport
    let configuration: VirtioRngConfiguration
    public let layout: VirtioDeviceLayout

    // State under context.lock.
    var chain = DescriptorChain()
    var segments: [UnsafeMutableRawBufferPointer] = []
    var quota: EntropyQuota
    /// Bytes handed to the guest, and requests returned empty (not RAM, or no writable
    /// buffer, or the host refused).
    public internal(set) var bytesGiven: UInt64 = 0
    public internal(set) var badRequests: UInt64 = 0
    /// Periods whose quota ran out (the refill timer was armed; requests posted meanwhile
    /// wait for the next period).
    public internal(set) var throttled: UInt64 = 0

    /// The rest of a kick past the per-action budget, on the I/O loop.
    lazy var continuation = DeferredAction(continuing: context) { [weak self] in self?.process() }
    /// The end of a rate-limit period with requests waiting: the queue runs again, and
    /// the quota refills as it is asked (`EntropyQuota.available`).
    lazy var refillTimer = DeviceTimer(clock: context.clock, lock: context.lock) { [weak self] in
        guard let self else { return }
        self.context.cost.measure { self.process() }
    }

    public required init(options: inout DeviceOptions, context: VirtioDeviceContext) throws {
        configuration = try VirtioRngConfiguration(options: &options)
        self.context = context
        transport = context.transport
        quota = EntropyQuota(maxBytes: configuration.maxBytes, periodMilliseconds: configuration.periodMilliseconds)
        layout = VirtioDeviceLayout(features: 0, configLength: 0, queueCount: 1,
                                    maxQueueSize: configuration.queueSize, ring: configuration.ring)
    }

    public func shutdown() { refillTimer.cancel() }

    public var counters: [(name: String, value: UInt64)] {
        [("bytes-given", bytesGiven), ("bad-requests", badRequests), ("throttled-periods", throttled)]
    }

    // MARK: VirtioDevice

    public func acceptsFeatures(_ features: UInt64) -> Bool { true }
    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}
    public func activate() { process() }
    public func queueNotified(_ index: Int) { process() }

    /// The quota is host state and survives a reset, as QEMU's (a guest cannot reset its
    /// way around the limit); a pending refill finds the queue disabled and does nothing.
    public func reset() {}

    /// Fills the requests on the queue: at most the per-action budget's worth now, the
    /// rest from the I/O loop; past the quota, the rest at the next period.
    func process() {
        // Past the quota, the requests wait on the ring for the refill timer.
        func quotaLeft() -> Bool {
            guard quota.available(Self.maximumRequestBytes, now: context.clock.now) > 0 else {
                waitForRefill()
                return false
            }
            return true
        }
        context.serveChains(of: 0, into: &chain, continuation: continuation, while: quotaLeft) { chain in
            let written = fill(chain, upTo: quota.available(Self.maximumRequestBytes, now: context.clock.now))
            quota.spend(written, now: context.clock.now)
            context.cost.bytes(Int(written))
            return UInt32(truncatingIfNeeded: written)
        }
    }

    /// Writes up to `limit` random bytes over the chain's writable buffers; returns how
    /// many. A chain with readable buffers (§5.4.6.2: the driver MUST NOT), no writable
    /// bytes, or memory that is not RAM gets none.
    private func fill(_ chain: DescriptorChain, upTo limit: UInt64) -> UInt64 {
        if let why = context.oneWayBuffers(of: chain, writable: true, into: &segments) {
            badRequests &+= 1
            context.guestLog.warning("virtio-rng.bad-request", "\(why); returned empty")
            return 0
        }
        var written: UInt64 = 0
        for segment in segments where written < limit {
            let n = Int(min(UInt64(segment.count), limit - written))
            guard EntropySource.fill(UnsafeMutableRawBufferPointer(rebasing: segment[0 ..< n])) else {
                badRequests &+= 1
                context.guestLog.warning("virtio-rng.getrandom", "the host's getrandom failed; the request returns with what it has")
                break
            }
            written += UInt64(n)
        }
        bytesGiven &+= written
        return written
    }

    /// The quota is spent: the requests stay on the ring until the period ends.
    private func waitForRefill() {
        guard let end = quota.periodEnd, refillTimer.deadline != end else { return }
        throttled &+= 1
        refillTimer.arm(at: end)
    }
}
