#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// Random bytes from the host kernel's CSPRNG: getrandom(2) without flags, which QEMU's
/// default `rng-builtin` backend uses too (`qemu_guest_getrandom`). It blocks only before
/// the kernel's pool is first initialized, long before a VM starts. Every call in every
/// sandbox role may make it (Docs/security.md, the common list).
enum EntropySource {
    /// Fills `buffer`; false if the kernel refused (it never does for these sizes: reads
    /// of up to 256 bytes are never short, longer ones only on a signal, which is retried).
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        var done = 0
        // Each pass gets at least one byte or fails: at most `buffer.count` passes.
        while done < buffer.count, let base = buffer.baseAddress {
            let n = clinux_getrandom(base + done, buffer.count - done, 0)
            if n > 0 {
                done += n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }
}
