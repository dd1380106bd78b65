import Logging
import VMMBlock
import VMMCore
import VMMNet
import VMMTestKit

/// Errors building a qtest machine from user input (the device list).
public enum QTestMachineError: Error, Equatable, CustomStringConvertible {
    case badSlot(device: String, value: String)
    /// A `--device` entry refused, named as the user wrote it.
    case device(text: String, reason: String)

    public var description: String {
        switch self {
        case let .badSlot(d, v): "bad value '\(v)' for option 'slot' of device \(d): expected a PCI slot 1-31"
        case let .device(text, reason): "--device '\(text)': \(reason)"
        }
    }
}

/// The machine a qtest session drives: guest RAM in the PC layout, the PCI bus with the
/// devices of a device list, virtual time, and interrupts reported to the server.
///
/// Like QEMU started with a firmware that only halts, nothing programs the devices: BARs
/// are unassigned until the script sizes and places them through 0xCF8/0xCFC.
/// Device timers run on the machine's `VirtualClock` (advanced only by `clock_step` /
/// `clock_set`), while real network backends run on the event loop's thread.
public final class QTestMachine: @unchecked Sendable {
    public let machine: TestMachine
    public var memory: GuestMemory { machine.memory }
    public var clock: VirtualClock { machine.clock }

    /// - Parameters:
    ///   - memorySize: guest RAM (QEMU's `pc` default is 128 MiB).
    ///   - devices: device list entries (`e1000,net=user,slot=4`); `slot=N` places the device.
    ///   - registry: the device types (`DeviceCatalog.registry` in the CLI).
    ///   - services: where a real `NetworkBackendFactory` and `BlockBackendFactory` come
    ///     from (the CLI's: `disk=` opens files and NBD exports as under `run`); without
    ///     them, NICs get in-memory endpoints and block devices in-memory disks.
    public init(memorySize: UInt64 = 128 << 20, devices: [String], registry: PCIDeviceRegistry,
                services: ServiceRegistry? = nil, logger: Logger = Logger(label: "swiftvmm.qtest")) throws {
        machine = try TestMachine(memorySize: memorySize, networkFactory: services?.resolve(NetworkBackendFactory.self),
                                  blockFactory: services?.resolve(BlockBackendFactory.self), logger: logger)
        // Devices that make files wait for the command line to be accepted before they
        // keep them (a virtio-console's `chardev=file:`), as the NICs' captures do.
        if let start = services?.resolve(MachineStart.self) { machine.services.register(MachineStart.self, start) }
        for text in devices {
            do {
                let spec = try DeviceSpec.parse(text)
                var options = spec.options
                var slot: Int?
                if let s = try options.take("slot") {
                    guard let n = Int(s), (1 ... 31).contains(n) else { throw QTestMachineError.badSlot(device: spec.name, value: s) }
                    slot = n
                }
                try machine.bus.add(registry.lookup(spec.name), options: &options, slot: slot)
            } catch {
                machine.bus.shutdown()
                throw QTestMachineError.device(text: text, reason: "\(error)")
            }
        }
        // Real backends deliver frames from the loop thread; device time stays virtual.
        machine.loop.startThread(name: "qtest-io")
    }

    /// Stops the I/O loop and closes backends.
    public func shutdown() {
        machine.loop.stop()
        machine.bus.shutdown()
    }
}
