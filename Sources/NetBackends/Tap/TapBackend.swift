#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import VMMCore
import VMMNet

/// `net=tap:NAME`: frames to and from a Linux TAP interface, each with a virtio-net
/// header, so checksum/TSO offloads pass straight through to the host stack.
public final class TapBackend: NetworkBackend, @unchecked Sendable {
    public let capabilities = BackendCapabilities(virtioNetHeader: true,
                                                  offloads: [.checksum, .tso4, .tso6, .tsoECN],
                                                  maxFrameSize: 65_535)
    /// Sends are counted under `device`, receives on the I/O loop: one writer each.
    public let counters = BackendCounters(serialized: true)
    public let interfaceName: String
    /// True when the TAP was created here (and disappears on `stop()`).
    public let createdInterface: Bool
    public var description: String { "tap:\(interfaceName)" }
    public var isLinkUp: Bool { port.isLinkUp }

    private let loop: EventLoop
    private let port: ReceiverPort
    /// The fd; nil once stopped or after the interface vanished. Send holds this lock
    /// across writev so the loop cannot close the fd underneath it.
    private let device: Mutex<Int32?>
    /// The same fd for the loop's reads, or -1: taking `device` there would wait on a send
    /// in progress (a 64 KiB writev holds it for microseconds, and Mutex spins first).
    /// Changed only under `device`, when the fd closes; each read holds this lock, so
    /// `stop` on another thread (`serve` shutting down) cannot close the fd, and let its
    /// number be reused by another open, in the middle of one.
    private let readFD: Mutex<Int32>
    /// A failed send queued `interfaceGone` on the loop: the frames the guest sends until
    /// it runs do not queue one each (the loop's queue has no limit of its own).
    private let teardownQueued = Atomic<Bool>(false)
    private let registration = Mutex<IORegistration?>(nil)
    /// The most one read asks for: header + the largest frame a TSO-enabled TAP hands over.
    private static let readSize = VirtioNetHeader.size + 65_550
    /// Frames taken per readiness event before letting other fds run.
    private static let readBatch = 64
    /// Where one readiness event's frames are read, one after another (64-byte aligned),
    /// before they go to the device together: a read is made only while a whole
    /// `readSize` fits, so 64 standard frames fit (~100 KiB) and four of the largest.
    /// Loop thread only. Pages are touched as frames need them.
    private let readArena = UnsafeMutableRawBufferPointer.allocate(byteCount: TapBackend.arenaSize, alignment: 64)
    private static let arenaSize = 4 * TapBackend.readSlot(TapBackend.readSize)
    /// Where a read of `n` bytes leaves the next one: 64-byte aligned.
    private static func readSlot(_ n: Int) -> Int { (n + 63) & ~63 }

    /// How many frames of `length` bytes (Ethernet header onward) one readiness event
    /// hands the device when the TAP has plenty: 64 standard frames, 22 of 9014 bytes, 4
    /// of 64 KiB. What a benchmark of the device's receive path delivers at once.
    public static func framesPerDelivery(frameLength length: Int) -> Int {
        let slot = readSlot(VirtioNetHeader.size + max(0, length))
        return min(readBatch, (arenaSize - readSize) / slot + 1)
    }
    /// The frames the device refused, `readFrames[heldFrom ..< heldEnd]`: they stay in the
    /// arena (nothing is read while any are held) and are offered again on
    /// `resumeReceive`. Loop thread only.
    private var heldFrom = 0, heldEnd = 0
    /// The frames in `readArena`, as the device gets them.
    private let readFrames: UnsafeMutableBufferPointer<ReceivedFrame> = {
        let frames = UnsafeMutableBufferPointer<ReceivedFrame>.allocate(capacity: TapBackend.readBatch)
        frames.initialize(repeating: ReceivedFrame(UnsafeRawBufferPointer(start: nil, count: 0), header: nil))
        return frames
    }()
    /// Frames up to this size go to the kernel as one buffer (header + frame copied into
    /// `sendBuffer`), larger ones as an iovec list after the leading pieces that fit
    /// (`gather`). tun's write path costs more per iovec than copying a standard frame:
    /// 1514 B frames, same TAP, raw C loop: one buffer 293k frames/s, header + frame as
    /// two iovecs 279k, copied then written 287k; at 64 KiB the copy costs more than it
    /// saves (109k against 132k). Docs/performance.md.
    static let contiguousLimit = 2048
    /// Header + frame of a small frame; guarded by `device` (written under its lock).
    private let sendBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: VirtioNetHeader.size + contiguousLimit, alignment: 64)

    public convenience init(interface name: String, eventLoop: EventLoop) throws(NetBackendError) {
        self.init(tap: try TapDevice.open(name: name), eventLoop: eventLoop)
    }

    /// `net=tap-fd:N|NAME`: a TAP opened by someone else, handed over as `fd` (owned from now on).
    public convenience init(adopting fd: Int32, label: String, eventLoop: EventLoop) throws(NetBackendError) {
        self.init(tap: try TapDevice.adopt(fd: fd, option: "net", value: "tap-fd:\(label)"), eventLoop: eventLoop)
    }

    private init(tap: TapDevice, eventLoop: EventLoop) {
        interfaceName = tap.name
        createdInterface = tap.created
        loop = eventLoop
        device = Mutex(tap.fd)
        readFD = Mutex(tap.fd)
        port = ReceiverPort(counters: counters, linkUp: true)
    }

    deinit {
        release()
        // Frames still held for the device (the loop stopped before `stop`'s offer ran).
        if heldFrom < heldEnd { counters.dropped(.linkDown, count: heldEnd - heldFrom) }
        readArena.deallocate()
        readFrames.deallocate()
        sendBuffer.deallocate()
    }

    public func start(receiver: FrameReceiver) {
        port.attach(receiver)
        guard let fd = device.withLock({ $0 }) else { return }
        let reg = try? loop.register(fd: fd, events: .readable) { [weak self] events in self?.readable(events) }
        registration.withLock { $0 = reg }
        if reg == nil { interfaceGone() }
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        guard let length = ScatterList.totalLength(segments), length <= capabilities.maxFrameSize else {
            counters.dropped(.oversized)
            return .dropped(.oversized)
        }
        guard length >= minimumFrameSize, segments.count < Int(maxIOVecs) else {
            counters.dropped(.malformed)
            return .dropped(.malformed)
        }
        let outcome = device.withLock { fd -> (Int, Int32) in
            guard let fd else { return (closedMarker, 0) }
            let (gathered, used) = gather(header: header, segments)
            let n: Int
            if gathered == segments.count {
                n = clinux_write(fd, sendBuffer.baseAddress, used)
            } else {
                // The iovec array lives on the stack: no allocation per frame.
                n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: segments.count - gathered + 1) { iov in
                    iov[0] = iovec(iov_base: sendBuffer.baseAddress, iov_len: used)
                    for i in gathered ..< segments.count {
                        iov[i - gathered + 1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: segments[i].baseAddress),
                                                      iov_len: segments[i].count)
                    }
                    return clinux_writev(fd, iov.baseAddress, Int32(iov.count))
                }
            }
            if n < 0 { return (n, errno) }
            counters.sent(bytes: length)   // under this lock: the counters are `serialized`
            return (n, 0)
        }
        let (written, error) = outcome
        if written >= 0 { return .sent }
        // The interface already went away and its fd is closed: count, and don't queue
        // another teardown on the loop for every frame the guest keeps sending.
        if written == closedMarker {
            counters.dropped(.linkDown)
            return .dropped(.linkDown)
        }
        let reason: DropReason
        switch error {
        case EAGAIN, EWOULDBLOCK, ENOBUFS: reason = .wouldBlock
        // The interface is administratively down: the kernel refuses frames.
        case EIO: reason = .linkDown
        case EINVAL: reason = .malformed   // the kernel rejected the virtio-net header
        default:
            if ConnectionErrno.isGone(error) {
                if !teardownQueued.exchange(true, ordering: .relaxed) {
                    loop.execute { [weak self] in self?.interfaceGone() }
                }
                reason = .linkDown
            } else {
                reason = .backendError
            }
        }
        counters.dropped(reason)
        return .dropped(reason)
    }

    public func resumeReceive() {
        loop.execute { [weak self] in
            guard let self, self.offerHeld() else { return }
            if let reg = self.registration.withLock({ $0 }) { self.loop.update(reg, events: .readable) }
        }
    }

    public func setReceiveOffloads(_ offloads: NetOffloads) {
        device.withLock { fd in
            guard let fd else { return }
            _ = TapDevice(fd: fd, name: interfaceName, created: createdInterface).setOffloads(offloads)
        }
    }

    public func stop() {
        release()
        // Frames held for the device are offered once more, on the loop (their only
        // thread): with the port detached they are counted lost.
        loop.execute { [weak self] in _ = self?.offerHeld() }
    }

    /// Closes the TAP and lets go of the device (`stop`, `deinit`).
    private func release() {
        if let reg = registration.withLock({ r -> IORegistration? in defer { r = nil }; return r }) { loop.unregister(reg) }
        device.withLock { fd in
            readFD.withLock { $0 = -1 }
            if let fd { close(fd) }   // a TAP created here is non-persistent: closing deletes it
            fd = nil
        }
        port.detach()
    }

    /// Writes the virtio-net header (the kernel always expects one, IFF_VNET_HDR; none
    /// means no offload) into `sendBuffer`, then copies the frame's leading segments
    /// after it for as long as they fit: all of a frame up to `contiguousLimit`, and the
    /// e1000's rewritten headers (its first 256 bytes) ahead of a jumbo or TSO payload,
    /// which leaves the kernel one iovec fewer. The caller holds `device`. Returns how
    /// many segments were copied and the bytes used.
    private func gather(header: VirtioNetHeader?, _ segments: [UnsafeRawBufferPointer]) -> (segments: Int, bytes: Int) {
        (header ?? VirtioNetHeader()).write(to: sendBuffer)
        var used = VirtioNetHeader.size
        var gathered = 0
        for segment in segments {
            guard segment.count <= sendBuffer.count - used else { break }
            used += ByteCopy.copy(to: UnsafeMutableRawBufferPointer(rebasing: sendBuffer[used...]), from: segment)
            gathered += 1
        }
        return (gathered, used)
    }

    // MARK: Loop thread

    private func readable(_ events: IOEvents) {
        let fd = readFD.withLock { $0 }
        guard fd >= 0 else { return }
        // Paused with frames held, the fd can still report an error or hang-up: epoll
        // delivers those whatever the mask, and tun's poll answers EPOLLERR once the
        // interface is gone. Reported once, a level-triggered error would bring us back on
        // every loop turn until the guest takes the frame (its receiver may stay off for
        // good). A zero-length read consumes no frame and fails with EBADFD exactly when
        // the interface is gone. (On this host's kernel the deletion wakes the fd with no
        // error in the mask, so it is noticed when the frame is taken: TapTests.)
        if heldFrom < heldEnd {
            if !events.isDisjoint(with: .hangup), interfaceVanished(fd) { interfaceGone() } else { pauseReading() }
            return
        }
        // What this turn reads goes to the device in one delivery, after the reads: it is
        // published to the guest at once, and no read runs while the device is locked.
        var count = 0, used = 0, gone = false
        while count < TapBackend.readBatch, readArena.count - used >= TapBackend.readSize {
            let buffer = UnsafeMutableRawBufferPointer(rebasing: readArena[used ..< used + TapBackend.readSize])
            // `stop` on another thread (a device shut down while the loop runs, as `serve`
            // does) may close the fd meanwhile: read no further from a number that may be
            // reused by then.
            guard let (n, e) = readLocked(fd, into: buffer) else { break }
            if n < 0 {
                if ConnectionErrno.isTransient(e) { break }
                if e == EIO { break }   // interface down: nothing to read, not gone
                gone = true
                break
            }
            guard n >= VirtioNetHeader.size + minimumFrameSize else {
                if n == 0 { break }
                counters.dropped(.malformed)
                continue
            }
            // tun_put_user returns the frame's whole length even when it copied only
            // what fit; a header size raised by another holder of the TAP
            // (TUNSETVNETHDRSZ) can make that more than the buffer.
            guard n <= buffer.count else {
                counters.dropped(.oversized)
                continue
            }
            let all = UnsafeRawBufferPointer(rebasing: buffer[0 ..< n])
            let header = VirtioNetHeader(all)
            let frame = UnsafeRawBufferPointer(rebasing: all[VirtioNetHeader.size...])
            // A frame without GSO must fit the largest frame we promise; GSO frames are 64 KiB at most.
            if header?.isGSO != true, frame.count > capabilities.maxFrameSize {
                counters.dropped(.oversized)
                continue
            }
            readFrames[count] = ReceivedFrame(frame, header: header)
            count += 1
            used += TapBackend.readSlot(n)
        }
        let taken = port.deliver(UnsafeBufferPointer(rebasing: readFrames[0 ..< count]))
        if taken < count { (heldFrom, heldEnd) = (taken, count) }
        if gone { return interfaceGone() }
        if taken < count { pauseReading() }
    }

    /// Offers the held frames again; true when none are left.
    private func offerHeld() -> Bool {
        guard heldFrom < heldEnd else { return true }
        heldFrom += port.deliver(UnsafeBufferPointer(rebasing: readFrames[heldFrom ..< heldEnd]))
        guard heldFrom >= heldEnd else { return false }
        (heldFrom, heldEnd) = (0, 0)
        return true
    }

    /// One read into `buffer` while `fd` is still the open TAP: the result and errno, or
    /// nil once `stop` or `interfaceGone` closed it.
    private func readLocked(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> (Int, Int32)? {
        readFD.withLock { current -> (Int, Int32)? in
            guard current == fd else { return nil }
            let n = clinux_read(fd, buffer.baseAddress, buffer.count)
            return (n, errno)
        }
    }

    private func interfaceVanished(_ fd: Int32) -> Bool {
        guard let (n, e) = readLocked(fd, into: UnsafeMutableRawBufferPointer(rebasing: readArena[0 ..< 0])), n < 0 else { return false }
        return !ConnectionErrno.isTransient(e) && e != EIO   // EIO: down, not gone
    }

    private func pauseReading() {
        if let reg = registration.withLock({ $0 }) { loop.update(reg, events: []) }
    }

    /// What the write closure returns when the fd was already closed by `interfaceGone`.
    private let closedMarker = -2

    /// The interface was deleted (EBADFD): the link is down for good.
    private func interfaceGone() {
        if let reg = registration.withLock({ r -> IORegistration? in defer { r = nil }; return r }) { loop.unregister(reg) }
        device.withLock { fd in
            readFD.withLock { $0 = -1 }
            if let fd { close(fd) }
            fd = nil
        }
        port.setLink(up: false)
    }
}
