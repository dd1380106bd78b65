#include "CChecksum.h"

#include <string.h>

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

int cchecksum_wide_flag;

// Asked once, when the program is loaded: callers read the flag (an inline function),
// not a lazily initialised Swift global whose accessor ran on every checksum.
__attribute__((constructor)) static void cchecksum_probe(void) {
    cchecksum_wide_flag = cchecksum_wide_available();
}

// Per 32 bytes one VPMADDWD instead of two unpacks and two adds: the words are biased
// to signed (x ^ 0x8000 is w - 32768), multiplied by 1 and added in pairs into 32-bit
// lanes, exactly (each pair lies in [-65536, 65534]; no saturation with a multiplier of
// 1). The unpacks ran on the shuffle port alone; VPMADDWD and the adds spread over the
// vector ALUs. The bias, 65536 per pair, is added back once at the end. With a
// `destination`, each block is stored as it is loaded: the receive path copies a frame
// into guest memory and verifies its checksum in one pass (the loads are shared, the
// stores overlap the arithmetic). Inlined into both callers, so the test on
// `destination` leaves the loop.
__attribute__((target("avx2"), always_inline))
static inline uint64_t sum16_blocks(uint8_t *destination, const uint8_t *source, size_t rounds) {
    const uint8_t *p = source;
    uint8_t *q = destination;
    const __m256i bias = _mm256_set1_epi16((short)0x8000);
    const __m256i ones = _mm256_set1_epi16(1);
    // 16 pairs of words per 64-byte round, each 65536 short.
    uint64_t total = (uint64_t)rounds << 20;
    while (rounds > 0) {
        // A lane moves by at most 65,536 per round: 16,384 rounds stay well inside int32.
        size_t block = rounds < 16384 ? rounds : 16384;
        rounds -= block;
        __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
        for (; block > 0; block--, p += 64) {
            __m256i x = _mm256_loadu_si256((const __m256i *)p);
            __m256i y = _mm256_loadu_si256((const __m256i *)(p + 32));
            if (q) {
                _mm256_storeu_si256((__m256i *)q, x);
                _mm256_storeu_si256((__m256i *)(q + 32), y);
                q += 64;
            }
            a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_xor_si256(x, bias), ones));
            b = _mm256_add_epi32(b, _mm256_madd_epi16(_mm256_xor_si256(y, bias), ones));
        }
        // Eight signed 32-bit lanes each, widened to 64 bits and added.
        __m256i wide = _mm256_add_epi64(
            _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(a)), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(a, 1))),
            _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(b)), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(b, 1))));
        __m128i half = _mm_add_epi64(_mm256_castsi256_si128(wide), _mm256_extracti128_si256(wide, 1));
        total += (uint64_t)(_mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1));
    }
    return total;
}

// The bytes after the last whole block (fewer than 64), copied too with a `destination`:
// 8 at a time into the two 32-bit halves of a 64-bit sum, then 4, 2 and 1. This is x86-64
// (little-endian) code, so a trailing odd byte — the high half of a big-endian word
// padded with zero (RFC 1071 §4.1) — is [byte, 0] as a host word: the byte's value.
// Summed here rather than in Swift's portable tail loop, which for an IPv4 header or a
// frame's last 42 bytes cost more than the call.
__attribute__((always_inline))
static inline uint64_t sum16_tail(uint8_t *destination, const uint8_t *source, size_t length) {
    uint64_t sum = 0;
    for (; length >= 8; length -= 8, source += 8) {
        uint64_t w;
        memcpy(&w, source, 8);
        if (destination) { memcpy(destination, &w, 8); destination += 8; }
        sum += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    if (length >= 4) {
        uint32_t w;
        memcpy(&w, source, 4);
        if (destination) { memcpy(destination, &w, 4); destination += 4; }
        sum += w; source += 4; length -= 4;
    }
    if (length >= 2) {
        uint16_t w;
        memcpy(&w, source, 2);
        if (destination) { memcpy(destination, &w, 2); destination += 2; }
        sum += w; source += 2; length -= 2;
    }
    if (length == 1) {
        if (destination) *destination = *source;
        sum += *source;
    }
    return sum;
}

__attribute__((target("avx2")))
uint64_t cchecksum_sum16_wide(const void *bytes, size_t length) {
    size_t rounds = length / 64;
    return sum16_blocks(NULL, bytes, rounds) + sum16_tail(NULL, (const uint8_t *)bytes + rounds * 64, length % 64);
}

__attribute__((target("avx2")))
uint64_t cchecksum_copy_sum16_wide(void *destination, const void *source, size_t length) {
    size_t rounds = length / 64, bulk = rounds * 64;
    return sum16_blocks(destination, source, rounds)
        + sum16_tail((uint8_t *)destination + bulk, (const uint8_t *)source + bulk, length % 64);
}

#else

int cchecksum_wide_flag;
int cchecksum_wide_available(void) { return 0; }
uint64_t cchecksum_sum16_wide(const void *bytes, size_t length) { (void)bytes; (void)length; return 0; }
uint64_t cchecksum_copy_sum16_wide(void *destination, const void *source, size_t length) {
    (void)destination; (void)source; (void)length; return 0;
}

#endif
