#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CLinux

/// An open `/dev/kvm`: the API version check and the system-wide queries.
public final class KVMSystem: @unchecked Sendable {
    public let fd: Int32

    public static let defaultPath = "/dev/kvm"

    /// Whether this host offers KVM at all (for tests and a friendly CLI error).
    public static var isAvailable: Bool { access(defaultPath, R_OK | W_OK) == 0 }

    public init(path: String = KVMSystem.defaultPath) throws(KVMError) {
        fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        let version = ckvm_ioctl_int(fd, CKVM_GET_API_VERSION, 0)
        guard version == CKVM_API_VERSION else {
            close(fd)
            throw .apiVersion(found: version, expected: CKVM_API_VERSION)
        }
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value.
    public func check(_ capability: Int32) -> Int32 {
        max(0, ckvm_ioctl_int(fd, CKVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// Size of the shared `kvm_run` area each vCPU maps.
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try kvmIoctl(fd, CKVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
    }

    /// KVM_GET_SUPPORTED_CPUID, growing the buffer until the kernel is satisfied.
    public func supportedCPUID() throws(KVMError) -> [kvm_cpuid_entry2] {
        var count: UInt32 = 64
        while count <= 4096 {
            guard let buf = ckvm_cpuid2_alloc(count) else { throw .ioctl("KVM_GET_SUPPORTED_CPUID", errno: ENOMEM) }
            defer { free(buf) }
            if ckvm_ioctl(fd, CKVM_GET_SUPPORTED_CPUID, buf) == 0 {
                let n = Int(min(buf.pointee.nent, count))
                return Array(UnsafeBufferPointer(start: ckvm_cpuid2_entries(buf), count: n))
            }
            guard errno == E2BIG else { throw .ioctl("KVM_GET_SUPPORTED_CPUID", errno: errno) }
            count *= 2
        }
        throw .ioctl("KVM_GET_SUPPORTED_CPUID", errno: E2BIG)
    }
}
