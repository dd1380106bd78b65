#ifndef CCHECKSUM_H
#define CCHECKSUM_H
// The Internet checksum's inner loop with 256-bit vectors where the CPU has them.
// Swift compiles for the x86-64 baseline (SSE2) and has no per-function target
// attribute; C does (`__attribute__((target("avx2")))`), so the wide loop lives here and
// is chosen at run time. VMMNet's InternetChecksum keeps the portable loop for CPUs without AVX2.
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU runs AVX2 and the kernel saves the 256-bit registers (CPUID leaf 7
/// EBX bit 5; leaf 1 ECX OSXSAVE and AVX; XCR0 bits 1 and 2), else 0.
int cchecksum_wide_available(void);

/// What `cchecksum_wide_available()` answered, asked once when the program was loaded.
extern int cchecksum_wide_flag;
static inline int cchecksum_wide_ready(void) { return cchecksum_wide_flag; }

/// The sum of the host-order 16-bit words in the `length` bytes at `bytes` (a trailing
/// odd byte as the high half of a big-endian word), as a 64-bit integer to be folded by
/// the caller: 64-byte blocks 256 bits at a time, then the tail. Call only when
/// `cchecksum_wide_available()` returned 1.
uint64_t cchecksum_sum16_wide(const void *bytes, size_t length);

/// The same sum while copying the `length` bytes from `source` to `destination` (which
/// must not overlap): one pass over the bytes instead of a copy and a sum.
uint64_t cchecksum_copy_sum16_wide(void *destination, const void *source, size_t length);

#endif
