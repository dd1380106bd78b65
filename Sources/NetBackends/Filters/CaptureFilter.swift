import VMMCore
import VMMNet

/// `capture=FILE.pcap`: records every frame that crosses the wrapped backend, both
/// directions, into a pcap file. It sits next to the backend (inside any fault filter),
/// so the file shows the wire: frames a fault filter dropped on the way out are absent,
/// frames it drops on the way in are present. A frame the device refuses (back-pressure)
/// is recorded once, when it is finally taken.
public final class CaptureFilter: NetworkBackend, FrameReceiver, @unchecked Sendable {
    public let inner: NetworkBackend
    public let writer: PcapWriter
    private weak var upstream: FrameReceiver?

    public var description: String { "\(inner.description)+capture=\(writer.path)" }
    public var capabilities: BackendCapabilities { inner.capabilities }
    public var isLinkUp: Bool { inner.isLinkUp }
    public var counters: BackendCounters { inner.counters }

    /// The path is opened and checked now, so a bad one is refused with the command line,
    /// but the file is emptied only when the machine starts (`machineStart`; at once
    /// without one): a command line refused after this option leaves an existing capture
    /// as it was and removes a new one (`PcapWriter.close`). The emptying runs on the
    /// thread that starts the machine, before the sandbox, since the threads that write
    /// frames may not truncate files.
    public init(wrapping inner: NetworkBackend, path: String, machineStart: MachineStart?) throws(NetBackendError) {
        self.inner = inner
        do { writer = try PcapWriter(path: path, startLater: true) } catch {
            switch error {
            case let .open(_, e), let .write(_, e):
                throw .system(option: "capture", value: path, call: "open", errno: e, hint: nil)
            case .notRegularFile:
                throw .badValue(option: "capture", value: path, reason: "exists and is not a regular file")
            case .danglingLink:
                throw .badValue(option: "capture", value: path, reason: "a symbolic link to a file that does not exist")
            }
        }
        if let machineStart {
            machineStart.whenStarted { [weak writer] in try? writer?.start() }
        } else {
            do { try writer.start() } catch {
                if case let .open(_, e) = error { throw .system(option: "capture", value: path, call: "ftruncate", errno: e, hint: nil) }
            }
        }
    }

    public func start(receiver: FrameReceiver) {
        upstream = receiver
        inner.start(receiver: self)
    }

    public func send(_ segments: [UnsafeRawBufferPointer], header: VirtioNetHeader?) -> SendResult {
        let result = inner.send(segments, header: header)
        if result == .sent { writer.write(segments) }
        return result
    }

    public func resumeReceive() { inner.resumeReceive() }
    public func setReceiveOffloads(_ offloads: NetOffloads) { inner.setReceiveOffloads(offloads) }

    public func stop() {
        inner.stop()
        try? writer.close()
    }

    // MARK: FrameReceiver (from the backend)

    public func receive(_ frames: UnsafeBufferPointer<ReceivedFrame>) -> Int {
        guard let upstream else { return 0 }
        let accepted = upstream.receive(frames)
        for frame in frames.prefix(accepted) { writer.write(frame.bytes) }
        return accepted
    }

    public func linkStateChanged(up: Bool) { upstream?.linkStateChanged(up: up) }
}
