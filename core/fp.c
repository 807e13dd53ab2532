/* core/fp.c — exact half / bfloat16 / fp8 conversions.
 *
 * Scalar code is the ground truth. The bulk converters use F16C / AVX2 when
 * the CPU has them (checked once at run time with __builtin_cpu_supports) and
 * produce the same bits: F16C rounds to nearest even, keeps subnormals, and
 * quiets NaNs keeping the upper payload bits — the scalar code does the same.
 */
#include "core/fp.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define NB_X86 1
#endif

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float nb_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) /* inf, or NaN made quiet with its payload kept (as F16C does) */
        return u2f(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact: m < 2^10 */
        return sign ? -v : v;
    }
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t nb_f32_to_f16(float f) {
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff)); /* quiet NaN */
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00);                     /* >= 65536: inf */
    if (ax < 0x38800000u) {
        /* below the smallest normal half (2^-14): scale to units of 2^-24 and round to
         * nearest even; the scaling is exact, rintf uses the default RNE mode.
         * A result of 1024 is the smallest normal, which is the right encoding. */
        float v = u2f(ax) * 0x1p24f;
        return (uint16_t)(sign | (uint16_t)rintf(v));
    }
    uint32_t base = ((ax >> 23) - 112) << 10 | ((ax >> 13) & 0x3ff);
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (base & 1))) base++; /* carry may reach inf: correct */
    return (uint16_t)(sign | base);
}

float nb_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t nb_f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float nb_f8e4m3_to_f32(uint8_t v) {
    /* OCP FP8 E4M3 (fn): bias 7, no inf, 0x7f/0xff are NaN */
    uint32_t s = v >> 7, e = (v >> 3) & 0xf, m = v & 7;
    float r;
    if (e == 0xf && m == 7) r = NAN;
    else if (e == 0) r = (float)m * 0x1p-9f;
    else r = ldexpf(1.0f + (float)m / 8.0f, (int)e - 7);
    return s ? -r : r;
}

float nb_f8e5m2_to_f32(uint8_t v) { return nb_f16_to_f32((uint16_t)((uint16_t)v << 8)); }

/* ---- bulk --------------------------------------------------------------------- */

#ifdef NB_X86
__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(const uint16_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) d[i] = nb_f16_to_f32(s[i]);
}
__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(const float *s, uint16_t *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = nb_f32_to_f16(s[i]);
}
__attribute__((target("avx2,f16c"))) static void f16_round_f16c(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) x[i] = nb_f16_to_f32(nb_f32_to_f16(x[i]));
}
__attribute__((target("avx2"))) static void bf16_to_f32_avx2(const uint16_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_slli_epi32(v, 16));
    }
    for (; i < n; i++) d[i] = nb_bf16_to_f32(s[i]);
}
__attribute__((target("avx2"))) static void f32_to_bf16_avx2(const float *s, uint16_t *d, size_t n) {
    size_t i = 0;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), q = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(x, absmask), inf);
        __m256i r = _mm256_add_epi32(x, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(x, 16), one)));
        r = _mm256_srli_epi32(r, 16);
        __m256i nanv = _mm256_or_si256(_mm256_srli_epi32(x, 16), q);
        r = _mm256_blendv_epi8(r, nanv, isnan);
        /* pack 8 x u32 (each < 65536) to 8 x u16 */
        __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi32(lo, hi));
    }
    for (; i < n; i++) d[i] = nb_f32_to_bf16(s[i]);
}
static int have_avx2_f16c(void) {
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        /* CPUID.1:ECX bit 29 is F16C (clang's __builtin_cpu_supports does not know "f16c") */
        unsigned a, b, cx, d;
        __builtin_cpu_init();
        c = __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &cx, &d) && (cx & (1u << 29));
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c;
}
#endif

void nb_f16_to_f32_n(const uint16_t *src, float *dst, size_t n) {
#ifdef NB_X86
    if (have_avx2_f16c()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = nb_f16_to_f32(src[i]);
}

void nb_f16_round_n(float *x, size_t n) {
#ifdef NB_X86
    if (have_avx2_f16c()) { f16_round_f16c(x, n); return; }
#endif
    for (size_t i = 0; i < n; i++) x[i] = nb_f16_to_f32(nb_f32_to_f16(x[i]));
}

void nb_f32_to_f16_n(const float *src, uint16_t *dst, size_t n) {
#ifdef NB_X86
    if (have_avx2_f16c()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = nb_f32_to_f16(src[i]);
}

void nb_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n) {
#ifdef NB_X86
    if (have_avx2_f16c()) { bf16_to_f32_avx2(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = nb_bf16_to_f32(src[i]);
}

void nb_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n) {
#ifdef NB_X86
    if (have_avx2_f16c()) { f32_to_bf16_avx2(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = nb_f32_to_bf16(src[i]);
}
