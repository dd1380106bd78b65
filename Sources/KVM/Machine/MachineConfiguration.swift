import VMMCore

/// One PCI device the user asked for, at a slot or wherever is free.
public struct DeviceRequest: Sendable {
    public var spec: DeviceSpec
    /// How the user asked for it (e.g. `--device 'e1000,mac=…'`), to name it in error messages.
    public var text: String
    public var slot: Int?
    public var function: Int

    public init(spec: DeviceSpec, text: String, slot: Int? = nil, function: Int = 0) {
        self.spec = spec; self.text = text; self.slot = slot; self.function = function
    }
}

/// Everything `swiftvmm run` decided from its command line.
public struct MachineConfiguration: Sendable {
    public var kernel: KernelImage
    public var initrd: [UInt8]?
    public var cmdline: String
    public var memorySize: UInt64
    public var cpus: Int
    public var devices: [DeviceRequest]
    public var serial: SerialAttachment
    /// When the process started (boot timings count from here).
    public var startTime: UInt64

    public init(kernel: KernelImage, initrd: [UInt8]? = nil, cmdline: String = "", memorySize: UInt64 = 512 << 20,
                cpus: Int = 1, devices: [DeviceRequest] = [], serial: SerialAttachment = .stdio,
                startTime: UInt64 = MonotonicTime.nanoseconds()) {
        self.kernel = kernel; self.initrd = initrd; self.cmdline = cmdline; self.memorySize = memorySize
        self.cpus = cpus; self.devices = devices; self.serial = serial; self.startTime = startTime
    }
}
