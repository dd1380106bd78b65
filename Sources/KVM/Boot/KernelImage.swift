import VMMCore

/// A kernel file, recognised and validated before anything is created for the VM.
public struct KernelImage: Sendable {
    public enum Format: Sendable {
        case pvh(PVHImage)
        case bzImage(BzImage)
    }
    public let path: String
    public let format: Format
    let bytes: [UInt8]

    /// Reads and validates `path` (an ELF with a PVH note, or a bzImage).
    /// `limit`: the guest's memory size; a larger file is refused before it is read.
    public init(path: String, limit: UInt64 = PlatformLayout.maximumMemory) throws(BootError) {
        try self.init(bytes: readWholeFile(path, limit: limit), path: path)
    }

    public init(bytes: [UInt8], path: String) throws(BootError) {
        let r = ByteReader(bytes: bytes)
        self.path = path
        self.bytes = bytes
        if bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) {
            format = .pvh(try PVHImage.parse(r, path: path))
        } else if r.u32(BzImage.Field.magic) == 0x5372_6448 {
            format = .bzImage(try BzImage.parse(r, path: path))
        } else {
            throw .notAKernel(path: path)
        }
    }

    public var formatName: String {
        switch format {
        case .pvh: "PVH ELF"
        case .bzImage: "bzImage"
        }
    }

    /// Loads kernel, command line and initrd into `memory`; returns the boot CPU's state.
    public func load(into memory: GuestMemory, initrd: [UInt8]?, cmdline: String) throws(BootError) -> BootCPUState {
        switch format {
        case let .pvh(image): try image.load(into: memory, bytes: bytes, initrd: initrd, cmdline: cmdline, path: path)
        case let .bzImage(image): try image.load(into: memory, bytes: bytes, initrd: initrd, cmdline: cmdline, path: path)
        }
    }
}

extension KernelImage {
    /// Reads a file the user named (an initrd) with the same checks as the kernel.
    public static func readFile(_ path: String, limit: UInt64) throws(BootError) -> [UInt8] { try readWholeFile(path, limit: limit) }
}
