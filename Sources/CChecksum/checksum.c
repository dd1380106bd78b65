#include "CChecksum.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int cchecksum_wide_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned osxsave = 1u << 27, avx = 1u << 28;
    if ((c & osxsave) == 0 || (c & avx) == 0) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0;   // XMM and YMM state enabled by the kernel
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 5)) != 0;   // AVX2
}

__attribute__((target("avx2")))
uint64_t cchecksum_sum16_wide(const void *bytes, size_t rounds) {
    const uint8_t *p = bytes;
    const __m256i zero = _mm256_setzero_si256();
    uint64_t total = 0;
    while (rounds > 0) {
        // Each 32-bit lane gains at most 2 × 0xFFFF per round: 16,384 rounds stay
        // below 2^32 before the lanes are added into the 64-bit total.
        size_t block = rounds < 16384 ? rounds : 16384;
        rounds -= block;
        __m256i a = zero, b = zero;
        for (; block > 0; block--, p += 64) {
            __m256i x = _mm256_loadu_si256((const __m256i *)p);
            __m256i y = _mm256_loadu_si256((const __m256i *)(p + 32));
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_unpacklo_epi16(x, zero), _mm256_unpackhi_epi16(x, zero)));
            b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_unpacklo_epi16(y, zero), _mm256_unpackhi_epi16(y, zero)));
        }
        uint32_t lanes[16];
        _mm256_storeu_si256((__m256i *)lanes, a);
        _mm256_storeu_si256((__m256i *)(lanes + 8), b);
        for (int i = 0; i < 16; i++) total += lanes[i];
    }
    return total;
}

#else

int cchecksum_wide_available(void) { return 0; }
uint64_t cchecksum_sum16_wide(const void *bytes, size_t rounds) { (void)bytes; (void)rounds; return 0; }

#endif
