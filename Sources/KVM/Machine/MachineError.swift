#if canImport(Glibc)
import Glibc
#endif
import VMMCore

/// Why a machine could not be built, in one line naming the option or file at fault.
public enum MachineError: Error, CustomStringConvertible {
    case memorySize(UInt64)
    case cpuCount(Int)
    case serialFile(path: String, errno: Int32)
    case serialFileKind(path: String)
    case serialFileLink(path: String)
    case initrd(BootError)
    case device(spec: String, underlying: String)
    case kvm(KVMError)
    case boot(BootError)
    case platform(String)

    public var description: String {
        switch self {
        case let .memorySize(s):
            "--memory \(s >> 20)M is out of range (\(PlatformLayout.minimumMemory >> 20)M to \(PlatformLayout.maximumMemory >> 30)G)"
        case let .cpuCount(n): "--cpus \(n) is out of range (1 to \(Machine.maximumCPUs))"
        case let .serialFile(p, e): "--serial file:\(p): \(String(cString: strerror(e)))"
        case let .serialFileKind(p): "--serial file:\(p): not a regular file or a terminal"
        case let .serialFileLink(p): "--serial file:\(p): a symbolic link to a file that does not exist"
        case let .initrd(e): "--initrd: \(e)"
        case let .device(spec, u): "\(spec): \(u)"
        case let .kvm(e): "KVM: \(e)"
        case let .boot(e): "\(e)"
        case let .platform(s): s
        }
    }
}
