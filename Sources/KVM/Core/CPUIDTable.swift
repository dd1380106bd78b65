import CKVM
import CLinux

/// Shapes KVM's supported CPUID into what one vCPU of this machine reports.
enum CPUIDTable {
    /// Sets the APIC id and package topology (SDM vol. 2A, CPUID leaves 01H and 0BH) and
    /// the hypervisor-present bit (leaf 01H ECX[31]).
    static func adjusted(_ supported: [kvm_cpuid_entry2], apicID: UInt32, cpuCount: UInt32) -> [kvm_cpuid_entry2] {
        let count = max(1, cpuCount)
        // Bits of the x2APIC id that select a core inside the package.
        var coreBits: UInt32 = 0
        while (UInt32(1) << coreBits) < count { coreBits += 1 }
        return supported.map { entry in
            var e = entry
            switch e.function {
            case 0x1:
                e.ebx = (e.ebx & 0x0000_FFFF) | (apicID << 24) | ((count & 0xFF) << 16)
                if count > 1 { e.edx |= 1 << 28 } // HTT: the logical-processor count field is valid
                e.ecx |= 1 << 31
            case 0xB, 0x1F:
                // Level 0: one thread per core; level 1: `count` cores per package.
                switch e.index {
                case 0: e.eax = 0; e.ebx = 1; e.ecx = (1 << 8) | 0
                case 1: e.eax = coreBits; e.ebx = count; e.ecx = (2 << 8) | 1
                default: e.eax = 0; e.ebx = 0; e.ecx = e.index
                }
                e.edx = apicID
            default:
                break
            }
            return e
        }
    }
}
