import FuzzSupport
import KVM
import VMMCore

/// Fuzz target 7: the kernel loaders (`swiftvmm run --kernel`): bzImage setup-header and
/// PVH ELF parsing on arbitrary images, then loading what parses into a small guest RAM
/// with an input-chosen command line and initrd. Bad images must be a `BootError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKernelLoader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let ramMiB = [1, 2, 16, 64][input.choose(4)]
    let initrd: [UInt8]? = input.bool() ? input.bytes(upTo: 64) : nil
    let cmdline = String(decoding: input.bytes(upTo: 255), as: UTF8.self)
    let image = input.rest()
    let kernel: KernelImage
    do {
        kernel = try KernelImage(bytes: image, path: "fuzz")
    } catch {
        _ = error.description
        return 0
    }
    guard let memory = try? GuestMemory(pcRAMSize: UInt64(ramMiB) << 20) else { return 0 }
    do {
        _ = try kernel.load(into: memory, initrd: initrd, cmdline: cmdline)
    } catch {
        _ = error.description
    }
    return 0
}
