#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux

/// Failures talking to /dev/kvm. Each names the call that failed and why.
public enum KVMError: Error, CustomStringConvertible, Equatable {
    case open(path: String, errno: Int32)
    case apiVersion(found: Int32, expected: Int32)
    case ioctl(String, errno: Int32)
    case mmap(String, errno: Int32)
    case badValue(String)

    public var description: String {
        switch self {
        case let .open(p, e): "cannot open \(p): \(String(cString: strerror(e)))"
        case let .apiVersion(f, x): "KVM API version \(f) is not supported (expected \(x))"
        case let .ioctl(name, e): "\(name) failed: \(String(cString: strerror(e)))"
        case let .mmap(what, e): "cannot map \(what): \(String(cString: strerror(e)))"
        case let .badValue(what): what
        }
    }
}

/// `ioctl` with a pointer argument; throws the errno named after `name`.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int32 {
    let r = ckvm_ioctl(fd, request, arg)
    if r < 0 { throw .ioctl(name, errno: errno) }
    return r
}

/// `ioctl` with an integer argument.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, value: UInt) throws(KVMError) -> Int32 {
    let r = ckvm_ioctl_int(fd, request, value)
    if r < 0 { throw .ioctl(name, errno: errno) }
    return r
}
