import Virtio
import VMMCore

/// Where a console port's bytes go (`chardev=`).
public enum ConsoleTarget: Equatable, Sendable {
    /// Nowhere: output is taken and dropped, no input (QEMU's port without a chardev).
    case none
    /// Output appended to a file (created if missing); no input.
    case file(path: String)
    /// A Unix socket this process listens on: one client at a time, both ways
    /// (`socat - UNIX-CONNECT:PATH`).
    case socket(path: String)

    /// `none`, `file:PATH` or `socket:PATH`.
    public init(option text: String) throws(OptionError) {
        if text == "none" {
            self = .none
        } else if text.hasPrefix("file:"), text.count > 5 {
            self = .file(path: String(text.dropFirst(5)))
        } else if text.hasPrefix("socket:"), text.count > 7 {
            self = .socket(path: String(text.dropFirst(7)))
        } else {
            throw .badValue(key: "chardev", value: text, reason: "expected none, file:PATH or socket:PATH")
        }
    }
}

/// The user's choices for one virtio console (`--device virtio-console,chardev=…`).
struct VirtioConsoleConfiguration {
    var target = ConsoleTarget.none
    /// QEMU's virtio-serial queues hold 128 entries; Linux posts one page-sized input
    /// buffer per entry (`fill_queue`) and sends one output buffer at a time.
    var queueSize: UInt16 = 128
    var ring = VirtioRingOptions()

    static let help: [OptionHelp] = [
        OptionHelp("chardev", "none|file:PATH|socket:PATH",
                   "where the guest's hvc0 goes: nowhere (default), appended to a file, or a Unix socket to connect to (one client at a time, both ways)"),
        OptionHelp("queue-size", "2-1024", "entries per virtqueue, a power of two (default 128)"),
    ] + VirtioRingOptions.help

    init(options: inout DeviceOptions) throws(OptionError) {
        if let text = try options.take("chardev") { target = try ConsoleTarget(option: text) }
        if let v = try options.takeInteger("queue-size", in: UInt16(2) ... UInt16(1024)) {
            guard v.nonzeroBitCount == 1 else {
                throw .badValue(key: "queue-size", value: String(v), reason: "must be a power of two (virtio 1.2 §2.7)")
            }
            queueSize = v
        }
        ring = try VirtioRingOptions(options: &options)
    }
}
