/* core/expf.c — see expf.h. */
#include "core/expf.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define NB_EXPF_X86 1
#endif

/* 2^(i/32) as a double's bits, minus i << 47 (so that adding k << 47 to the
 * entry of k % 32 gives 2^(k/32)); computed to 80 digits and rounded once */
static const uint64_t k_tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
/* x * 32 / ln 2 = k + r; 2^(r/32) ~ 1 + C2 r + C1 r^2 + C0 r^3 */
static const double k_inv = 0x1.71547652b82fep+0 * 32, k_shift = 0x1.8p+52;
static const double k_c0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32, k_c1 = 0x1.ebfce50fac4f3p-3 / 32 / 32,
                    k_c2 = 0x1.62e42ff0c52d6p-1 / 32;
/* beyond these, e^x overflows / is below half the smallest subnormal */
#define EXPF_HI 0x1.62e42ep6f
#define EXPF_LO (-0x1.9fe368p6f)

float nb_expf(float x) {
    uint32_t ux;
    memcpy(&ux, &x, 4);
    const uint32_t abstop = (ux >> 20) & 0x7ff;
    if (abstop >= 0x42b) { /* |x| >= 88, or not finite */
        if (ux == 0xff800000u) return 0.f;
        if (abstop >= 0x7f8) return x + x;
        if (x > EXPF_HI) return INFINITY;
        if (x < EXPF_LO) return 0.f;
    }
    const double xd = x;
    double kd = fma(k_inv, xd, k_shift);
    uint64_t ki;
    memcpy(&ki, &kd, 8);
    kd -= k_shift;
    const double r = fma(k_inv, xd, -kd);
    const uint64_t t = k_tab[ki % 32] + (ki << 47);
    double s;
    memcpy(&s, &t, 8);
    const double r2 = r * r, z = fma(k_c0, r, k_c1);
    double y = fma(k_c2, r, 1.0);
    y = fma(z, r2, y);
    return (float)(y * s);
}

#ifdef NB_EXPF_X86
/* 8 lanes of nb_expf's general path (no special cases), in double */
__attribute__((target("avx512f"))) static inline __m256 expf8_avx512(__m256 x, const __m512i tab[4]) {
    const __m512d xd = _mm512_cvtps_pd(x);
    __m512d kd = _mm512_fmadd_pd(_mm512_set1_pd(k_inv), xd, _mm512_set1_pd(k_shift));
    const __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, _mm512_set1_pd(k_shift));
    const __m512d r = _mm512_fmadd_pd(_mm512_set1_pd(k_inv), xd, _mm512_sub_pd(_mm512_setzero_pd(), kd));
    /* table entry ki % 32: two 16-entry permutes, chosen by bit 4 */
    const __m512i lo = _mm512_permutex2var_epi64(tab[0], ki, tab[1]), hi = _mm512_permutex2var_epi64(tab[2], ki, tab[3]);
    const __mmask8 up = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
    const __m512i t = _mm512_add_epi64(_mm512_mask_blend_epi64(up, lo, hi), _mm512_slli_epi64(ki, 47));
    const __m512d s = _mm512_castsi512_pd(t), r2 = _mm512_mul_pd(r, r);
    const __m512d z = _mm512_fmadd_pd(_mm512_set1_pd(k_c0), r, _mm512_set1_pd(k_c1));
    __m512d y = _mm512_fmadd_pd(_mm512_set1_pd(k_c2), r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}

__attribute__((target("avx512f"))) static void expf_shift_avx512(const float *x, float shift, float *y, size_t n) {
    __m512i tab[4];
    for (int i = 0; i < 4; i++) tab[i] = _mm512_loadu_si512(k_tab + 8 * i);
    const __m512 sh = _mm512_set1_ps(shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), sh);
        const __m256 lo = expf8_avx512(_mm512_castps512_ps256(v), tab),
                     hi = expf8_avx512(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)), tab);
        __m512 e = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
        /* the special cases, as nb_expf takes them */
        e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_set1_ps(EXPF_LO), _CMP_LT_OQ), e, _mm512_setzero_ps());
        e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_set1_ps(EXPF_HI), _CMP_GT_OQ), e,
                                 _mm512_set1_ps(INFINITY));
        e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), e, _mm512_add_ps(v, v));
        _mm512_storeu_ps(y + i, e);
    }
    for (; i < n; i++) y[i] = nb_expf(x[i] - shift);
}

__attribute__((target("avx512f"))) static float max_avx512(const float *x, size_t n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    size_t i = 0;
    /* maxps returns its second operand when either is a NaN: NaNs are skipped */
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
    float r = _mm512_reduce_max_ps(m);
    for (; i < n; i++)
        if (x[i] > r) r = x[i];
    return r;
}

static int have_avx512f(void) {
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        __builtin_cpu_init();
        c = __builtin_cpu_supports("avx512f");
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c;
}
#endif

void nb_expf_shift_n(const float *x, float shift, float *y, size_t n) {
#ifdef NB_EXPF_X86
    if (have_avx512f()) {
        expf_shift_avx512(x, shift, y, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) y[i] = nb_expf(x[i] - shift);
}

float nb_max_n(const float *x, size_t n) {
#ifdef NB_EXPF_X86
    if (have_avx512f()) return max_avx512(x, n);
#endif
    float r = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (x[i] > r) r = x[i];
    return r;
}
