/* kernels/cpu/x86_simd.h — the x86 kernel bodies, compiled once per ISA.
 *
 * Included by x86_avx2.c (AVX2 + FMA + F16C) and x86_avx512.c (the same plus
 * AVX-512 VL/BW and VNNI) inside a target pragma; the includer defines
 * NB_X86_MUL_US(u, s), the u8 x s8 -> 8 x int32 product step (maddubs + madd
 * on AVX2, vpdpbusd with VNNI). Everything here is static: each includer gets
 * its own copy compiled for its own target, and calls x86_fill().
 *
 * Integer kernels reproduce generic.c bit for bit (kernels_impl.h): within a
 * 32-element chunk the int8 products are summed exactly in int32 lanes
 * (maddubs pair sums cannot saturate: codes are <= 127 in magnitude on the
 * activation side and 8 bits on the weight side, unsigned via the sign
 * trick), each chunk's lanes are reduced to one exact int32, and the float
 * part repeats generic.c's expressions: 8 chunks at a time in the 8 lanes of
 * one vector (chunk c in lane c % 8 = generic's acc[c % 8]), with separate
 * multiplies and adds (no FMA) in the same order.
 */
#ifndef NB_X86_MUL_US
#error "define NB_X86_MUL_US before including x86_simd.h"
#endif

#include "kernels/cpu/kernels_impl.h"
#include "quant/ggml_quants.h"
#include "quant/nf4.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INL static inline __attribute__((always_inline))

/* u8 x s8, 32 lanes -> 8 int32 sums of 4 products each (maddubs + madd, or
 * one VNNI dpbusd: the same exact integers) */
INL __m256i mul_us(__m256i u, __m256i s) { return NB_X86_MUL_US(u, s); }
/* acc + pairwise int16 products summed to int32 (madd + add, or one VNNI
 * vpdpwssd: the same exact integers; no overflow for the K-quants' ranges) */
INL __m256i madd_acc(__m256i acc, __m256i a, __m256i b) { return NB_X86_MADD_ACC(acc, a, b); }
/* s8 x s8 via |a| * sign(b, a) */
INL __m256i mul_ss(__m256i a, __m256i b) { return mul_us(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a)); }

INL int32_t hsum1(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* lane j = sum of the 8 lanes of v[j] */
INL __m256i hsum8x8(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i v4, __m256i v5, __m256i v6,
                    __m256i v7) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31));
}

INL __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
INL __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
INL __m256i join(__m128i lo, __m128i hi) { return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1); }

/* 16 bytes of ggml nibbles: element j low nibble, j+16 high nibble */
INL __m256i nib32(const uint8_t *p) {
    __m128i t = load128(p);
    return _mm256_and_si256(join(t, _mm_srli_epi16(t, 4)), _mm256_set1_epi8(15));
}
/* 16 bytes, element 2i in the low (lo_first) or high nibble of byte i */
INL __m256i nib32_interleaved(const uint8_t *p, int lo_first) {
    __m128i t = load128(p), m = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(t, m), hi = _mm_and_si128(_mm_srli_epi16(t, 4), m);
    if (lo_first) return join(_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi));
    return join(_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo));
}
/* byte k = 0xFF where bit k of m is set */
INL __m256i bits32(uint32_t m) {
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m),
                                    _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                                      0x0101010101010101LL, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}
INL __m256i table16(const int8_t *t) {
    __m128i v = load128(t);
    return join(v, v);
}

INL float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Software prefetch NB_PF_DIST bytes ahead of a packed weight stream about
 * to consume `len` bytes at p (kernels_impl.h: why). */
INL void nb_prefetch_ahead(const char *p, int len) {
    for (int l = 0; l < len; l += 64) _mm_prefetch(p + NB_PF_DIST + l, _MM_HINT_T0);
}

/* ------------------------------------------------------------ activations */

/* See generic.c quant_block: same scale, same codes (cvtps2dq rounds to
 * nearest even like nb_kern_rne). len is a multiple of 32. */
INL float quant_block(const float *x, int len, int8_t *qs, int16_t *sums, int sum_len) {
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
    __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < len; i += 8) {
        __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));
        amax = _mm256_max_ps(amax, a);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float am = _mm_cvtss_f32(m);
    if (_mm256_movemask_ps(bad) || am < 1e-30f) {
        memset(qs, 0, (size_t)len);
        for (int i = 0; i < len / sum_len; i++) sums[i] = 0;
        return _mm256_movemask_ps(bad) ? NAN : 0.f;
    }
    const float d = am / 127.f, id = 1.f / d;
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < len; i += 32) {
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vid));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vid));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vid));
        if (sum_len == 32) {
            sums[i / 32] = (int16_t)hsum1(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        } else {
            sums[i / 16] = (int16_t)hsum1(_mm256_add_epi32(i0, i1));
            sums[i / 16 + 1] = (int16_t)hsum1(_mm256_add_epi32(i2, i3));
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_max_epi8(_mm256_permutevar8x32_epi32(p, perm), _mm256_set1_epi8(-127));
        _mm256_storeu_si256((__m256i *)(qs + i), p);
    }
    return d;
}

static void quant_q32(const float *x, int64_t n, int8_t *qs, float *d, int16_t *s) {
    for (int64_t b = 0; b < n / 32; b++) d[b] = quant_block(x + 32 * b, 32, qs + 32 * b, s + b, 32);
}

static void quant_q256(const float *x, int64_t n, int8_t *qs, float *d, int16_t *s) {
    for (int64_t b = 0; b < n / 256; b++) d[b] = quant_block(x + 256 * b, 256, qs + 256 * b, s + 16 * b, 16);
}

/* ------------------------------------------------------------ float weights */

INL float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* kind 0: f32, 1: f16, 2: bf16 */
INL __m256 load_w(const void *w, int64_t i, int kind) {
    if (kind == 0) return _mm256_loadu_ps((const float *)w + i);
    __m128i h = load128((const uint16_t *)w + i);
    if (kind == 1) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
INL float load_w1(const void *w, int64_t i, int kind) {
    if (kind == 0) return ((const float *)w)[i];
    uint16_t h = ((const uint16_t *)w)[i];
    if (kind == 1) return _cvtsh_ss(h);
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* Float weights in register tiles: up to 4 rows x FT_TMAX tokens at once,
 * each output one vector accumulator of VF_N lanes (element i in lane
 * i % VF_N, one FMA per step in increasing i), then vf_hsum, then the tail
 * elements one fmaf each. Every output is computed by that same sequence
 * whatever the tile's shape, so a token gives the same bits alone or in a
 * batch (per ISA: the AVX-512 table uses 16 lanes, AVX2 8). */
#ifdef NB_X86_ZMM
typedef __m512 vf;
#define VF_N 16
#define FT_TMAX 4
INL vf vf_zero(void) { return _mm512_setzero_ps(); }
INL vf vf_loadx(const float *p) { return _mm512_loadu_ps(p); }
INL vf vf_loadw(const void *w, int64_t i, int kind) {
    if (kind == 0) return _mm512_loadu_ps((const float *)w + i);
    const __m256i h = load256((const uint16_t *)w + i);
    if (kind == 1) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
INL vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
INL float vf_hsum(vf v) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum_ps(_mm256_add_ps(_mm512_castps512_ps256(v), hi));
}
#else
typedef __m256 vf;
#define VF_N 8
#define FT_TMAX 2 /* 16 registers: 8 accumulators + 4 weight + 2 token vectors */
INL vf vf_zero(void) { return _mm256_setzero_ps(); }
INL vf vf_loadx(const float *p) { return _mm256_loadu_ps(p); }
INL vf vf_loadw(const void *w, int64_t i, int kind) { return load_w(w, i, kind); }
INL vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
INL float vf_hsum(vf v) { return hsum_ps(v); }
#endif

/* bytes ahead of each weight row to prefetch when one token streams it */
#define FT_PREFETCH 2048
INL void ftile_rt(int64_t n, const void *w, uint64_t rb, const float *x, int64_t ldx, float *y, int64_t ldy,
                  int kind, const int R, const int T) {
    vf acc[4][FT_TMAX];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = vf_zero();
    int64_t i = 0;
    for (; i + VF_N <= n; i += VF_N) {
        vf wv[4], xv[FT_TMAX];
        if (T == 1) /* one token streams the weights from memory: ask for them early */
            for (int r = 0; r < R; r++)
                _mm_prefetch((const char *)w + (uint64_t)r * rb + (uint64_t)i * (kind ? 2 : 4) + FT_PREFETCH,
                             _MM_HINT_T0);
        for (int r = 0; r < R; r++) wv[r] = vf_loadw((const unsigned char *)w + (uint64_t)r * rb, i, kind);
        for (int t = 0; t < T; t++) xv[t] = vf_loadx(x + t * ldx + i);
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) acc[r][t] = vf_fma(wv[r], xv[t], acc[r][t]);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            const void *wr = (const unsigned char *)w + (uint64_t)r * rb;
            float s = vf_hsum(acc[r][t]);
            for (int64_t j = i; j < n; j++) s = __builtin_fmaf(load_w1(wr, j, kind), x[t * ldx + j], s);
            y[t * ldy + r] = s;
        }
}

#define FT_CASE(R, T)                                                                                  \
    case (R) * 8 + (T):                                                                                \
        ftile_rt(n, wr, rb, xt, ldx, yt, ldy, kind, R, T);                                             \
        break;
#if FT_TMAX == 4
#define FT_CASES(R) FT_CASE(R, 1) FT_CASE(R, 2) FT_CASE(R, 3) FT_CASE(R, 4)
#else
#define FT_CASES(R) FT_CASE(R, 1) FT_CASE(R, 2)
#endif

INL void ftile(int64_t n, const void *w, uint64_t rb, int64_t nr, const float *x, int64_t ldx, int64_t nt, float *y,
               int64_t ldy, int kind) {
    for (int64_t r = 0; r < nr; r += 4) {
        const int R = nr - r >= 4 ? 4 : (int)(nr - r);
        const void *wr = (const unsigned char *)w + (uint64_t)r * rb;
        for (int64_t t = 0; t < nt; t += FT_TMAX) {
            const int T = nt - t >= FT_TMAX ? FT_TMAX : (int)(nt - t);
            const float *xt = x + t * ldx;
            float *yt = y + t * ldy + r;
            switch (R * 8 + T) {
                FT_CASES(1)
                FT_CASES(2)
                FT_CASES(3)
                FT_CASES(4)
            default: break;
            }
        }
    }
}
static void ftile_f32(int64_t n, const void *w, uint64_t rb, int64_t nr, const float *x, int64_t ldx, int64_t nt,
                      float *y, int64_t ldy) {
    ftile(n, w, rb, nr, x, ldx, nt, y, ldy, 0);
}
static void ftile_f16(int64_t n, const void *w, uint64_t rb, int64_t nr, const float *x, int64_t ldx, int64_t nt,
                      float *y, int64_t ldy) {
    ftile(n, w, rb, nr, x, ldx, nt, y, ldy, 1);
}
static void ftile_bf16(int64_t n, const void *w, uint64_t rb, int64_t nr, const float *x, int64_t ldx, int64_t nt,
                       float *y, int64_t ldy) {
    ftile(n, w, rb, nr, x, ldx, nt, y, ldy, 2);
}
/* the 1 x 1 tile */
static float dot_f32(int64_t n, const void *w, const void *x) {
    float y;
    ftile_rt(n, w, 0, x, 0, &y, 0, 0, 1, 1);
    return y;
}
static float dot_f16(int64_t n, const void *w, const void *x) {
    float y;
    ftile_rt(n, w, 0, x, 0, &y, 0, 1, 1, 1);
    return y;
}
static float dot_bf16(int64_t n, const void *w, const void *x) {
    float y;
    ftile_rt(n, w, 0, x, 0, &y, 0, 2, 1, 1);
    return y;
}

/* ------------------------------------------------------------ 32-element chunks */

/* Per type: WV(w, c) -> chunk c's 32 weight codes as bytes, signed when SG
 * (multiplied with the sign trick) or unsigned; SCALE(w, c) -> the weight
 * scale generic.c uses; MIN(w, c) -> the min scale (types with value =
 * code * d + m). name##_core computes NT (1..4) tokens against one weight row,
 * preparing each weight chunk once; per token it is exactly the 1-token
 * computation, so batching never changes a result. */
/* The table entries over name##_core: 1 token (dot) and 4 tokens (dot4). */
#define CORE_ENTRIES(name)                                                                             \
    static float name(int64_t n, const void *w, const void *vx) {                                      \
        const nb_xq *x = vx;                                                                           \
        float o;                                                                                       \
        name##_core(n, w, &x, 1, &o);                                                                  \
        return o;                                                                                      \
    }                                                                                                  \
    static void name##_x4(int64_t n, const void *w, const void *const *vx, float *out) {               \
        name##_core(n, w, (const nb_xq *const *)vx, 4, out);                                           \
    }

#define DOT32_FN(name, WV, SG, SCALE, HAS_MIN, MIN)                                                       \
    INL void name##_core(int64_t n, const void *w, const nb_xq *const *xs, const int NT, float *out) {   \
        const int64_t nc = n / 32;                                                                     \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
        int64_t c = 0;                                                                                 \
        for (; c + 8 <= nc; c += 8) {                                                                  \
            __m256i u[8], sg[8];                                                                       \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {                                      \
                const __m256i v = WV(w, c + k);                                                        \
                u[k] = SG ? _mm256_abs_epi8(v) : v;                                                    \
                sg[k] = v;                                                                             \
            }                                                                                          \
            const __m256 dw = _mm256_setr_ps(SCALE(w, c), SCALE(w, c + 1), SCALE(w, c + 2), SCALE(w, c + 3), \
                                             SCALE(w, c + 4), SCALE(w, c + 5), SCALE(w, c + 6),        \
                                             SCALE(w, c + 7));                                         \
            const __m256 mw = HAS_MIN ? _mm256_setr_ps(MIN(w, c), MIN(w, c + 1), MIN(w, c + 2), MIN(w, c + 3), \
                                                       MIN(w, c + 4), MIN(w, c + 5), MIN(w, c + 6),    \
                                                       MIN(w, c + 7))                                  \
                                      : _mm256_setzero_ps();                                           \
            _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {                                     \
                const int8_t *q = xs[t]->qs + 32 * c;                                                  \
                __m256i p[8];                                                                          \
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {                                  \
                    const __m256i xv = load256(q + 32 * k);                                            \
                    p[k] = mul_us(u[k], SG ? _mm256_sign_epi8(xv, sg[k]) : xv);                        \
                }                                                                                      \
                const __m256i r = hsum8x8(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);             \
                const __m256 dx = _mm256_loadu_ps(xs[t]->d + c);                                       \
                __m256 tt = _mm256_mul_ps(_mm256_cvtepi32_ps(r), _mm256_mul_ps(dw, dx));               \
                if (HAS_MIN) {                                                                         \
                    const __m256 fs = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(load128(xs[t]->s + c)));  \
                    tt = _mm256_add_ps(tt, _mm256_mul_ps(fs, _mm256_mul_ps(mw, dx)));                   \
                }                                                                                      \
                acc[t] = _mm256_add_ps(acc[t], tt);                                                    \
            }                                                                                          \
        }                                                                                              \
        for (int t = 0; t < NT; t++) {                                                                 \
            const nb_xq *x = xs[t];                                                                    \
            float a[8];                                                                                \
            _mm256_storeu_ps(a, acc[t]);                                                               \
            for (int64_t cc = c; cc < nc; cc++) {                                                      \
                const __m256i v = WV(w, cc), xv = load256(x->qs + 32 * cc);                            \
                const __m256i pr = SG ? mul_us(_mm256_abs_epi8(v), _mm256_sign_epi8(xv, v)) : mul_us(v, xv); \
                float tt = (float)hsum1(pr) * (SCALE(w, cc) * x->d[cc]);                               \
                if (HAS_MIN) tt = tt + (float)x->s[cc] * (MIN(w, cc) * x->d[cc]);                      \
                a[cc & 7] += tt;                                                                       \
            }                                                                                          \
            out[t] = nb_kern_acc_sum(a);                                                               \
        }                                                                                              \
    }                                                                                                  \
    CORE_ENTRIES(name)

#define NO_MIN(w, c) 0.f

/* Q8_0 */
INL __m256i wv_q8_0(const void *w, int64_t c) { return load256(((const nb_block_q8_0 *)w)[c].qs); }
#define SC_Q8_0(w, c) h2f(((const nb_block_q8_0 *)(w))[c].d)
DOT32_FN(dot_q8_0, wv_q8_0, 1, SC_Q8_0, 0, NO_MIN)

/* Q4_0: code - 8 */
INL __m256i wv_q4_0(const void *w, int64_t c) {
    return _mm256_sub_epi8(nib32(((const nb_block_q4_0 *)w)[c].qs), _mm256_set1_epi8(8));
}
#define SC_Q4_0(w, c) h2f(((const nb_block_q4_0 *)(w))[c].d)
DOT32_FN(dot_q4_0, wv_q4_0, 1, SC_Q4_0, 0, NO_MIN)

/* Q4_1: unsigned code, min term from the activation sums */
INL __m256i wv_q4_1(const void *w, int64_t c) { return nib32(((const nb_block_q4_1 *)w)[c].qs); }
#define SC_Q4_1(w, c) h2f(((const nb_block_q4_1 *)(w))[c].d)
#define MN_Q4_1(w, c) h2f(((const nb_block_q4_1 *)(w))[c].m)
DOT32_FN(dot_q4_1, wv_q4_1, 0, SC_Q4_1, 1, MN_Q4_1)

/* Q5_0 / Q5_1: fifth bit from qh */
INL __m256i q5_codes(const uint8_t *qs, const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    return _mm256_or_si256(nib32(qs), _mm256_and_si256(bits32(h), _mm256_set1_epi8(0x10)));
}
INL __m256i wv_q5_0(const void *w, int64_t c) {
    const nb_block_q5_0 *b = (const nb_block_q5_0 *)w + c;
    return _mm256_sub_epi8(q5_codes(b->qs, b->qh), _mm256_set1_epi8(16));
}
#define SC_Q5_0(w, c) h2f(((const nb_block_q5_0 *)(w))[c].d)
DOT32_FN(dot_q5_0, wv_q5_0, 1, SC_Q5_0, 0, NO_MIN)

INL __m256i wv_q5_1(const void *w, int64_t c) {
    const nb_block_q5_1 *b = (const nb_block_q5_1 *)w + c;
    return q5_codes(b->qs, b->qh);
}
#define SC_Q5_1(w, c) h2f(((const nb_block_q5_1 *)(w))[c].d)
#define MN_Q5_1(w, c) h2f(((const nb_block_q5_1 *)(w))[c].m)
DOT32_FN(dot_q5_1, wv_q5_1, 0, SC_Q5_1, 1, MN_Q5_1)

/* IQ4_NL: code book lookup */
INL __m256i wv_iq4_nl(const void *w, int64_t c) {
    return _mm256_shuffle_epi8(table16(nb_kvalues_iq4nl), nib32(((const nb_block_iq4_nl *)w)[c].qs));
}
#define SC_IQ4_NL(w, c) h2f(((const nb_block_iq4_nl *)(w))[c].d)
DOT32_FN(dot_iq4_nl, wv_iq4_nl, 1, SC_IQ4_NL, 0, NO_MIN)

/* NF4: 2 chunks per 64-block, high nibble first, int8 code book */
INL __m256i wv_nf4(const void *w, int64_t c) {
    const nb_block_nf4 *b = (const nb_block_nf4 *)w + c / 2;
    return _mm256_shuffle_epi8(table16(nb_kern_nf4_i8), nib32_interleaved(b->qs + 16 * (c & 1), 0));
}
#define SC_NF4(w, c) (((const nb_block_nf4 *)(w))[(c) / 2].d * (1.f / 127.f))
DOT32_FN(dot_nf4, wv_nf4, 1, SC_NF4, 0, NO_MIN)

/* ------------------------------------------------------------ token-lane tiles */

/* Rows x TL_TOK tokens for the 32-element types, one token per int32 lane
 * (nb_xqt layout), so no chunk needs a horizontal sum: lane t of
 * sum_k dot4(broadcast(weight codes 4k..4k+3), activation group k of token t)
 * is chunk c's exact integer product for token t. The weight side is the
 * unsigned form u = code + 2^OFF of the chunk's codes (u8 for maddubs /
 * vpdpbusd against the signed activations), so isum = sum(u * x) -
 * (block sum of x << OFF): the same exact int32 as generic.c. The float step
 * is generic's expression per lane, chunk c into accumulator c % 8, so each
 * output is the 1-token dot bit for bit. With VNNI: 16 tokens on 512-bit
 * vectors and two rows sharing each activation load (32 vector registers);
 * AVX2: 8 tokens, one row, and only the types whose u <= 31 (maddubs pair
 * sums stay below 2^15). */
#ifdef NB_X86_ZMM
#define TL_ROWS 2
#define TL_TOK 16
typedef __m512i tl_vi;
typedef __m512 tl_vf;
INL tl_vi tl_loadi(const void *p) { return _mm512_loadu_si512(p); }
INL tl_vi tl_set1i(int32_t v) { return _mm512_set1_epi32(v); }
INL tl_vi tl_zeroi(void) { return _mm512_setzero_si512(); }
INL tl_vi tl_dot(tl_vi acc, tl_vi u, tl_vi x) { return _mm512_dpbusd_epi32(acc, u, x); }
INL tl_vi tl_subi(tl_vi a, tl_vi b) { return _mm512_sub_epi32(a, b); }
INL tl_vi tl_shl(tl_vi a, unsigned k) { return _mm512_slli_epi32(a, k); }
INL tl_vf tl_cvt(tl_vi a) { return _mm512_cvtepi32_ps(a); }
INL tl_vf tl_loadf(const float *p) { return _mm512_loadu_ps(p); }
INL tl_vf tl_set1f(float v) { return _mm512_set1_ps(v); }
INL tl_vf tl_zerof(void) { return _mm512_setzero_ps(); }
INL tl_vf tl_mul(tl_vf a, tl_vf b) { return _mm512_mul_ps(a, b); }
INL tl_vf tl_add(tl_vf a, tl_vf b) { return _mm512_add_ps(a, b); }
INL void tl_storef(float *p, tl_vf v) { _mm512_storeu_ps(p, v); }
/* int32 lane k of u in every lane (one vpermd) */
INL tl_vi tl_bcast(__m256i u, int k) { return _mm512_permutexvar_epi32(_mm512_set1_epi32(k), _mm512_castsi256_si512(u)); }
#else
#define TL_ROWS 1
#define TL_TOK 8
typedef __m256i tl_vi;
typedef __m256 tl_vf;
INL tl_vi tl_loadi(const void *p) { return load256(p); }
INL tl_vi tl_set1i(int32_t v) { return _mm256_set1_epi32(v); }
INL tl_vi tl_zeroi(void) { return _mm256_setzero_si256(); }
INL tl_vi tl_dot(tl_vi acc, tl_vi u, tl_vi x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
}
INL tl_vi tl_subi(tl_vi a, tl_vi b) { return _mm256_sub_epi32(a, b); }
INL tl_vi tl_shl(tl_vi a, unsigned k) { return _mm256_slli_epi32(a, (int)k); }
INL tl_vf tl_cvt(tl_vi a) { return _mm256_cvtepi32_ps(a); }
INL tl_vf tl_loadf(const float *p) { return _mm256_loadu_ps(p); }
INL tl_vf tl_set1f(float v) { return _mm256_set1_ps(v); }
INL tl_vf tl_zerof(void) { return _mm256_setzero_ps(); }
INL tl_vf tl_mul(tl_vf a, tl_vf b) { return _mm256_mul_ps(a, b); }
INL tl_vf tl_add(tl_vf a, tl_vf b) { return _mm256_add_ps(a, b); }
INL void tl_storef(float *p, tl_vf v) { _mm256_storeu_ps(p, v); }
INL tl_vi tl_bcast(__m256i u, int k) { return _mm256_permutevar8x32_epi32(u, _mm256_set1_epi32(k)); }
#endif

/* Row r's 8 canonical accumulators (lane t: token t) reduced in the fixed
 * order of nb_kern_acc_sum; the first nt tokens' outputs stored. */
INL void tl_store_row(const tl_vf a[8], int nt, float *y, int64_t ldy) {
    const tl_vf v =
        tl_add(tl_add(tl_add(a[0], a[1]), tl_add(a[2], a[3])), tl_add(tl_add(a[4], a[5]), tl_add(a[6], a[7])));
    float o[TL_TOK];
    tl_storef(o, v);
    for (int t = 0; t < nt; t++) y[t * ldy] = o[t];
}

/* The table entry over name##_rows: TL_ROWS rows at a time, then single rows;
 * BLK: elements per step of name##_rows (its first argument counts them). */
#define TILE_ENTRY(name, BLK)                                                                            \
    static void name(int64_t n, const void *w, uint64_t rb, int64_t nr, const nb_xqt *x, int nt, float *y, \
                     int64_t ldy) {                                                                    \
        const int64_t nc = n / (BLK);                                                                  \
        int64_t r = 0;                                                                                 \
        for (; r + TL_ROWS <= nr; r += TL_ROWS) {                                                      \
            const void *wr[TL_ROWS];                                                                   \
            for (int i = 0; i < TL_ROWS; i++) wr[i] = (const unsigned char *)w + (uint64_t)(r + i) * rb; \
            name##_rows(nc, wr, x, nt, y + r, ldy, TL_ROWS);                                               \
        }                                                                                              \
        for (; r < nr; r++) {                                                                          \
            const void *wr[1] = {(const unsigned char *)w + (uint64_t)r * rb};                         \
            name##_rows(nc, wr, x, nt, y + r, ldy, 1);                                                     \
        }                                                                                              \
    }

/* UV(w, c): chunk c's 32 unsigned codes; OFF: log2 of the code offset (0:
 * none); SCALE, MIN as in DOT32_FN. */
#define TILE_FN(name, UV, OFF, SCALE, HAS_MIN, MIN)                                                      \
    INL void name##_rows(int64_t nc, const void *const *wr, const nb_xqt *x, int nt, float *y,          \
                         int64_t ldy, const int R) {                                                   \
        tl_vf acc[TL_ROWS][8];                                                                         \
        for (int r = 0; r < R; r++)                                                                    \
            for (int j = 0; j < 8; j++) acc[r][j] = tl_zerof();                                        \
        for (int64_t c0 = 0; c0 < nc; c0 += 8) {                                                       \
            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {                                      \
                const int64_t c = c0 + j;                                                              \
                if (c >= nc) break;                                                                    \
                __m256i wu[TL_ROWS];                                                                   \
                tl_vi s[TL_ROWS];                                                                      \
                for (int r = 0; r < R; r++) {                                                          \
                    wu[r] = UV(wr[r], c);                                                              \
                    s[r] = tl_zeroi();                                                                 \
                }                                                                                      \
                const int8_t *q = x->qs + 32 * TL_TOK * c;                                             \
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {                                  \
                    const tl_vi xv = tl_loadi(q + 4 * TL_TOK * k);                                     \
                    for (int r = 0; r < R; r++) s[r] = tl_dot(s[r], tl_bcast(wu[r], k), xv);           \
                }                                                                                      \
                const tl_vf dx = tl_loadf(x->d + TL_TOK * c);                                          \
                const tl_vi xs = tl_loadi(x->s + TL_TOK * c);                                          \
                for (int r = 0; r < R; r++) {                                                          \
                    const tl_vi is = (OFF) ? tl_subi(s[r], tl_shl(xs, (OFF))) : s[r];                  \
                    tl_vf tt = tl_mul(tl_cvt(is), tl_mul(tl_set1f(SCALE(wr[r], c)), dx));              \
                    if (HAS_MIN) tt = tl_add(tt, tl_mul(tl_cvt(xs), tl_mul(tl_set1f(MIN(wr[r], c)), dx))); \
                    acc[r][j] = tl_add(acc[r][j], tt);                                                 \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < R; r++) tl_store_row(acc[r], nt, y + r, ldy);                              \
    }                                                                                                  \
    TILE_ENTRY(name, 32)

INL __m256i uv_q4_0(const void *w, int64_t c) { return nib32(((const nb_block_q4_0 *)w)[c].qs); }
TILE_FN(tile_q4_0, uv_q4_0, 3, SC_Q4_0, 0, NO_MIN)
TILE_FN(tile_q4_1, wv_q4_1, 0, SC_Q4_1, 1, MN_Q4_1)
INL __m256i uv_q5_0(const void *w, int64_t c) {
    const nb_block_q5_0 *b = (const nb_block_q5_0 *)w + c;
    return q5_codes(b->qs, b->qh);
}
TILE_FN(tile_q5_0, uv_q5_0, 4, SC_Q5_0, 0, NO_MIN)
TILE_FN(tile_q5_1, wv_q5_1, 0, SC_Q5_1, 1, MN_Q5_1)
#ifdef NB_X86_ZMM
/* signed 8-bit codes: u = code + 128 */
INL __m256i u128(__m256i v) { return _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)); }
INL __m256i uv_q8_0(const void *w, int64_t c) { return u128(wv_q8_0(w, c)); }
TILE_FN(tile_q8_0, uv_q8_0, 7, SC_Q8_0, 0, NO_MIN)
INL __m256i uv_iq4_nl(const void *w, int64_t c) { return u128(wv_iq4_nl(w, c)); }
TILE_FN(tile_iq4_nl, uv_iq4_nl, 7, SC_IQ4_NL, 0, NO_MIN)
INL __m256i uv_nf4(const void *w, int64_t c) { return u128(wv_nf4(w, c)); }
TILE_FN(tile_nf4, uv_nf4, 7, SC_NF4, 0, NO_MIN)
#endif

/* INT4 group-wise: low nibble first, value q - z */
#define INT4_FNS(sfx, G, A)                                                                               \
    INL const uint8_t *blk_##sfx(const void *w, int64_t c) {                                           \
        return (const uint8_t *)w + (size_t)(c / ((G) / 32)) * (size_t)(2 + 2 * (A) + (G) / 2);          \
    }                                                                                                  \
    INL __m256i wv_##sfx(const void *w, int64_t c) {                                  \
        const uint8_t *b = blk_##sfx(w, c);                                                            \
        const int z = (A) ? (b[2] & 15) : 8;                                                                \
        __m256i v = nib32_interleaved(b + 2 + 2 * (A) + 16 * (c % ((G) / 32)), 1);                      \
        return _mm256_sub_epi8(v, _mm256_set1_epi8((char)z));                       \
    }                                                                                                  \
    INL float sc_##sfx(const void *w, int64_t c) {                                                     \
        uint16_t h;                                                                                    \
        memcpy(&h, blk_##sfx(w, c), 2);                                                                \
        return h2f(h);                                                                                 \
    }                                                                                                  \
    DOT32_FN(dot_##sfx, wv_##sfx, 1, sc_##sfx, 0, NO_MIN)
INT4_FNS(int4_s32, 32, 0)
INT4_FNS(int4_s64, 64, 0)
INT4_FNS(int4_s128, 128, 0)
INT4_FNS(int4_a32, 32, 1)
INT4_FNS(int4_a64, 64, 1)
INT4_FNS(int4_a128, 128, 1)

/* ------------------------------------------------------------ K-quants */

/* int16 scale vector: lanes 0..7 = a, 8..15 = b (pair sums of 16-element groups) */

/* K-quant super-blocks, 8 at a time: BODY(wb, q, bs, &vi, &vm) leaves two
 * int32 vectors whose lane sums are the exact integers `is` and `ms` of
 * generic.c; the 8 super-blocks' sums land in lanes 0..7 (super-block b in
 * lane b % 8) and the float step repeats generic.c's expression. */
#define KDOT_FN(name, T, BODY, HAS_MIN, KMIN)                                                                 \
    static float name(int64_t n, const void *vw, const void *vx) {                                     \
        const T *w = vw;                                                                               \
        const nb_xq *x = vx;                                                                           \
        const int64_t nb = n / 256;                                                                    \
        __m256 acc = _mm256_setzero_ps();                                                              \
        int64_t b = 0;                                                                                 \
        for (; b + 8 <= nb; b += 8) {                                                                  \
            __m256i vi[8], vm[8];                                                                      \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) BODY(w + b + k, x->qs + 256 * (b + k), x->s + 16 * (b + k), &vi[k], &vm[k]); \
            const __m256 dx = _mm256_loadu_ps(x->d + b);                                               \
            const __m256 dw = _mm256_setr_ps(h2f(w[b].d), h2f(w[b + 1].d), h2f(w[b + 2].d), h2f(w[b + 3].d), \
                                             h2f(w[b + 4].d), h2f(w[b + 5].d), h2f(w[b + 6].d),        \
                                             h2f(w[b + 7].d));                                         \
            __m256i is = hsum8x8(vi[0], vi[1], vi[2], vi[3], vi[4], vi[5], vi[6], vi[7]);              \
            __m256 t = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(is));                   \
            if (HAS_MIN) {                                                                             \
                __m256i ms = hsum8x8(vm[0], vm[1], vm[2], vm[3], vm[4], vm[5], vm[6], vm[7]);          \
                const __m256 dm = _mm256_setr_ps(KMIN(w, b), KMIN(w, b + 1), KMIN(w, b + 2), KMIN(w, b + 3), \
                                                 KMIN(w, b + 4), KMIN(w, b + 5), KMIN(w, b + 6),       \
                                                 KMIN(w, b + 7));                                      \
                t = _mm256_sub_ps(t, _mm256_mul_ps(_mm256_mul_ps(dm, dx), _mm256_cvtepi32_ps(ms)));     \
            }                                                                                          \
            acc = _mm256_add_ps(acc, t);                                                               \
        }                                                                                              \
        float a[8];                                                                                    \
        _mm256_storeu_ps(a, acc);                                                                      \
        for (; b < nb; b++) {                                                                          \
            __m256i vi, vm;                                                                            \
            BODY(w + b, x->qs + 256 * b, x->s + 16 * b, &vi, &vm);                                     \
            const float dx = x->d[b];                                                                  \
            float t = (h2f(w[b].d) * dx) * (float)hsum1(vi);                                           \
            if (HAS_MIN) t = t - (KMIN(w, b) * dx) * (float)hsum1(vm);                                 \
            a[b & 7] += t;                                                                             \
        }                                                                                              \
        return nb_kern_acc_sum(a);                                                                     \
    }
#define KMIN_DMIN(w, b) h2f((w)[b].dmin)
#define KMIN_NONE(w, b) 0.f

/* The same computation for 1..4 tokens with the weights prepared once per
 * super-block: PREP(wb, &p) unpacks a super-block into a PT, MUL(&p, q, bs,
 * &vi, &vm) is BODY's integer part for one token. Per token the float steps
 * are KDOT_FN's, so every result is the 1-token result bit for bit. */
#define KDOT4_FN(name, T, PT, PREP, MUL, HAS_MIN, KMIN)                                                     \
    INL void name##_core(int64_t n, const void *vw, const nb_xq *const *xs, const int NT, float *out) {    \
        const T *w = vw;                                                                               \
        const int64_t nb = n / 256;                                                                    \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
        int64_t b = 0;                                                                                 \
        for (; b + 8 <= nb; b += 8) {                                                                  \
            __m256i vi[4][8], vm[4][8];                                                                \
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {                                      \
                PT p;                                                                                  \
                PREP(w + b + k, &p);                                                                   \
                _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++)                                   \
                    MUL(&p, xs[t]->qs + 256 * (b + k), xs[t]->s + 16 * (b + k), &vi[t][k], &vm[t][k]); \
            }                                                                                          \
            const __m256 dw = _mm256_setr_ps(h2f(w[b].d), h2f(w[b + 1].d), h2f(w[b + 2].d), h2f(w[b + 3].d), \
                                             h2f(w[b + 4].d), h2f(w[b + 5].d), h2f(w[b + 6].d),        \
                                             h2f(w[b + 7].d));                                         \
            const __m256 dm = HAS_MIN ? _mm256_setr_ps(KMIN(w, b), KMIN(w, b + 1), KMIN(w, b + 2), KMIN(w, b + 3), \
                                                       KMIN(w, b + 4), KMIN(w, b + 5), KMIN(w, b + 6),  \
                                                       KMIN(w, b + 7))                                 \
                                      : _mm256_setzero_ps();                                           \
            _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {                                     \
                const __m256 dx = _mm256_loadu_ps(xs[t]->d + b);                                       \
                __m256i is = hsum8x8(vi[t][0], vi[t][1], vi[t][2], vi[t][3], vi[t][4], vi[t][5], vi[t][6], vi[t][7]); \
                __m256 tt = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(is));              \
                if (HAS_MIN) {                                                                         \
                    __m256i ms = hsum8x8(vm[t][0], vm[t][1], vm[t][2], vm[t][3], vm[t][4], vm[t][5], vm[t][6], vm[t][7]); \
                    tt = _mm256_sub_ps(tt, _mm256_mul_ps(_mm256_mul_ps(dm, dx), _mm256_cvtepi32_ps(ms))); \
                }                                                                                      \
                acc[t] = _mm256_add_ps(acc[t], tt);                                                    \
            }                                                                                          \
        }                                                                                              \
        for (int t = 0; t < NT; t++) {                                                                 \
            const nb_xq *x = xs[t];                                                                    \
            float a[8];                                                                                \
            _mm256_storeu_ps(a, acc[t]);                                                               \
            for (int64_t bb = b; bb < nb; bb++) {                                                      \
                PT p;                                                                                  \
                __m256i vi, vm;                                                                        \
                PREP(w + bb, &p);                                                                      \
                MUL(&p, x->qs + 256 * bb, x->s + 16 * bb, &vi, &vm);                                   \
                const float dx = x->d[bb];                                                             \
                float tt = (h2f(w[bb].d) * dx) * (float)hsum1(vi);                                     \
                if (HAS_MIN) tt = tt - (KMIN(w, bb) * dx) * (float)hsum1(vm);                          \
                a[bb & 7] += tt;                                                                       \
            }                                                                                          \
            out[t] = nb_kern_acc_sum(a);                                                               \
        }                                                                                              \
    }                                                                                                  \
    CORE_ENTRIES(name)

/* Q4_K/Q5_K scales: bytes 0..7 = 6-bit scales, 8..15 = 6-bit mins (the
 * packing of nb_kern_scale_min_k4 undone four at a time). */
INL __m128i k4_scales(const uint8_t *p) {
    uint32_t u[3];
    memcpy(u, p, 12);
    const uint32_t s03 = u[0] & 0x3f3f3f3fu, m03 = u[1] & 0x3f3f3f3fu;
    const uint32_t s47 = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    return _mm_setr_epi32((int)s03, (int)s47, (int)m03, (int)m47);
}
/* int16 lane j of a 128-bit half, broadcast over the half (pshufb mask) */
INL __m256i lane16(int j) { return _mm256_set1_epi16((short)((2 * j) | ((2 * j + 1) << 8))); }
/* vm for Q4_K/Q5_K: lane sum = sum_j m_j * (bs[2j] + bs[2j+1]) */
INL __m256i k4_mins(__m128i sm, const int16_t *bs) {
    const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    return _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup)), load256(bs));
}

/* Q4_K unpacked: nibbles of sub-blocks 2j (lo) and 2j+1 (hi), each sub-block's
 * scale broadcast as int16, and the mins paired with the 16-element bsums */
typedef struct q4k_prep {
    __m256i lo[4], hi[4], sc[8], mins;
} q4k_prep;
INL void prep_q4_k(const nb_block_q4_K *wb, q4k_prep *p) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m128i sm = k4_scales(wb->scales);
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    const __m128i dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    p->mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, dup));
    for (int j = 0; j < 4; j++) {
        const __m256i qb = load256(wb->qs + 32 * j);
        p->lo[j] = _mm256_and_si256(qb, m4);
        p->hi[j] = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
        p->sc[2 * j] = _mm256_shuffle_epi8(sc16, lane16(2 * j));
        p->sc[2 * j + 1] = _mm256_shuffle_epi8(sc16, lane16(2 * j + 1));
    }
}
/* vm lane sum = sum_j m_j * (bs[2j] + bs[2j+1]) */
INL void mul_q4_k(const q4k_prep *p, const int8_t *q, const int16_t *bs, __m256i *vi, __m256i *vm) {
    __m256i ai = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        ai = madd_acc(ai, _mm256_maddubs_epi16(p->lo[j], load256(q + 64 * j)), p->sc[2 * j]);
        ai = madd_acc(ai, _mm256_maddubs_epi16(p->hi[j], load256(q + 64 * j + 32)), p->sc[2 * j + 1]);
    }
    *vi = ai;
    *vm = _mm256_madd_epi16(p->mins, load256(bs));
}
KDOT4_FN(dot_q4_k, nb_block_q4_K, q4k_prep, prep_q4_k, mul_q4_k, 1, KMIN_DMIN)

INL void body_q5_k(const nb_block_q5_K *wb, const int8_t *q, const int16_t *bs, __m256i *vi, __m256i *vm) {
    const __m256i m4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(0x10);
    const __m128i sm = k4_scales(wb->scales);
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    *vm = k4_mins(sm, bs);
    __m256i hq = load256(wb->qh);
    __m256i ai = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i qb = load256(wb->qs + 32 * j);
        /* bits 2j and 2j+1 of each qh byte, moved to bit 4 (hq is shifted right by 2 per step) */
        __m256i hlo = _mm256_and_si256(_mm256_slli_epi16(hq, 4), b4);
        __m256i hhi = _mm256_and_si256(_mm256_slli_epi16(hq, 3), b4);
        hq = _mm256_srli_epi16(hq, 2);
        __m256i lo = _mm256_or_si256(_mm256_and_si256(qb, m4), hlo);
        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4), hhi);
        __m256i plo = _mm256_maddubs_epi16(lo, load256(q + 64 * j));
        __m256i phi = _mm256_maddubs_epi16(hi, load256(q + 64 * j + 32));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(plo, _mm256_shuffle_epi8(sc16, lane16(2 * j))));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(sc16, lane16(2 * j + 1))));
    }
    *vi = ai;
}
KDOT_FN(dot_q5_k, nb_block_q5_K, body_q5_k, 1, KMIN_DMIN)

/* int16 vector: lanes 0..7 = s16 lane 2p, lanes 8..15 = lane 2p+1 (s16 holds
 * the same 8 scales in both halves) */
INL __m256i pair16(__m256i s16, int p) {
    const __m256i m = join(_mm_set1_epi16((short)((4 * p) | ((4 * p + 1) << 8))),
                           _mm_set1_epi16((short)((4 * p + 2) | ((4 * p + 3) << 8))));
    return _mm256_shuffle_epi8(s16, m);
}

/* Q6_K with unsigned codes 0..63: is = sum sc*(code.q) - 32 * sum sc*bsum;
 * unpacked: the 8 code vectors of 32, their scale pairs, the 16 scales as int16 */
typedef struct q6k_prep {
    __m256i u[8], sc[8], sc16;
} q6k_prep;
INL void prep_q6_k(const nb_block_q6_K *wb, q6k_prep *p) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    const __m128i sc8 = load128(wb->scales);
    p->sc16 = _mm256_cvtepi8_epi16(sc8);
    for (int k = 0; k < 2; k++) {
        const uint8_t *ql = wb->ql + 64 * k;
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(k ? _mm_srli_si128(sc8, 8) : sc8));
        const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(wb->qh + 32 * k);
        p->u[4 * k] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
        p->u[4 * k + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
        p->u[4 * k + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30));
        p->u[4 * k + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
        for (int i = 0; i < 4; i++) p->sc[4 * k + i] = pair16(s16, i);
    }
}
INL void mul_q6_k(const q6k_prep *p, const int8_t *q, const int16_t *bs, __m256i *vi, __m256i *vm) {
    __m256i ai = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) ai = madd_acc(ai, _mm256_maddubs_epi16(p->u[i], load256(q + 32 * i)), p->sc[i]);
    const __m256i corr = _mm256_madd_epi16(p->sc16, load256(bs));
    *vi = _mm256_sub_epi32(ai, _mm256_slli_epi32(corr, 5));
    *vm = _mm256_setzero_si256();
}
KDOT4_FN(dot_q6_k, nb_block_q6_K, q6k_prep, prep_q6_k, mul_q6_k, 0, KMIN_NONE)

/* Token-lane tiles of Q4_K and Q6_K (see TILE_FN): per 32-element chunk the
 * exact int32 products of TL_TOK tokens in the lanes, then generic.c's
 * integer combination with the sub-block scales (vpmulld: exact, no
 * overflow for these ranges) and its float step per lane, super-block b
 * into accumulator b % 8. WPREP(wb, wu, sm) unpacks a super-block: wu[ch]
 * the 32 unsigned codes of chunk ch, sm its scales (and mins). */
INL void tl_prep_q4_k(const nb_block_q4_K *wb, __m256i wu[8], int8_t sm[16]) {
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int j = 0; j < 4; j++) {
        const __m256i qb = load256(wb->qs + 32 * j);
        wu[2 * j] = _mm256_and_si256(qb, m4);
        wu[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
    }
    _mm_storeu_si128((__m128i *)sm, k4_scales(wb->scales));
}
INL void tl_prep_q6_k(const nb_block_q6_K *wb, __m256i wu[8], int8_t sm[16]) {
    q6k_prep p;
    prep_q6_k(wb, &p);
    for (int i = 0; i < 8; i++) wu[i] = p.u[i];
    memcpy(sm, wb->scales, 16);
}

#if defined(NB_X86_ZMM)
INL tl_vi tl_mullo(tl_vi a, tl_vi b) { return _mm512_mullo_epi32(a, b); }
INL tl_vi tl_addi(tl_vi a, tl_vi b) { return _mm512_add_epi32(a, b); }
INL tl_vf tl_sub(tl_vf a, tl_vf b) { return _mm512_sub_ps(a, b); }
#else
INL tl_vi tl_mullo(tl_vi a, tl_vi b) { return _mm256_mullo_epi32(a, b); }
INL tl_vi tl_addi(tl_vi a, tl_vi b) { return _mm256_add_epi32(a, b); }
INL tl_vf tl_sub(tl_vf a, tl_vf b) { return _mm256_sub_ps(a, b); }
#endif

/* Q4_K: is = sum_j sc_j S_j, ms = sum_j m_j (bs[2j] + bs[2j+1]);
 * acc += (d dx) is - (dmin dx) ms.
 * Q6_K (codes 0..63 = value + 32): is = sum_g sc_g (S_g - 32 bs_g) over the
 * 16 groups of 16 (S_g: one half of a chunk's 8 lane groups);
 * acc += (d dx) is. */
#define KTILE_FN(name, T, WPREP, Q6, KMIN)                                                                   \
    INL void name##_rows(int64_t nb, const void *const *wr, const nb_xqt *x, int nt, float *y,          \
                         int64_t ldy, const int R) {                                                   \
        tl_vf acc[TL_ROWS][8];                                                                         \
        for (int r = 0; r < R; r++)                                                                    \
            for (int j = 0; j < 8; j++) acc[r][j] = tl_zerof();                                        \
        for (int64_t b0 = 0; b0 < nb; b0 += 8) {                                                       \
            _Pragma("GCC unroll 8") for (int j8 = 0; j8 < 8; j8++) {                                   \
                const int64_t b = b0 + j8;                                                             \
                if (b >= nb) break;                                                                    \
                __m256i wu[TL_ROWS][8];                                                                \
                int8_t sm[TL_ROWS][16];                                                                \
                tl_vi is[TL_ROWS], ms[TL_ROWS];                                                        \
                for (int r = 0; r < R; r++) {                                                          \
                    WPREP((const T *)wr[r] + b, wu[r], sm[r]);                                         \
                    is[r] = tl_zeroi();                                                                \
                    ms[r] = tl_zeroi();                                                                \
                }                                                                                      \
                for (int ch = 0; ch < 8; ch++) {                                                       \
                    const int8_t *q = x->qs + 32 * TL_TOK * (8 * b + ch);                              \
                    const int32_t *bs = x->s + TL_TOK * (16 * b + 2 * ch);                             \
                    tl_vi s0[TL_ROWS], s1[TL_ROWS];                                                    \
                    for (int r = 0; r < R; r++) s0[r] = s1[r] = tl_zeroi();                            \
                    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {                              \
                        const tl_vi x0 = tl_loadi(q + 4 * TL_TOK * k), x1 = tl_loadi(q + 4 * TL_TOK * (k + 4)); \
                        for (int r = 0; r < R; r++) {                                                  \
                            s0[r] = tl_dot(s0[r], tl_bcast(wu[r][ch], k), x0);                         \
                            s1[r] = tl_dot(s1[r], tl_bcast(wu[r][ch], k + 4), x1);                     \
                        }                                                                              \
                    }                                                                                  \
                    const tl_vi b0v = tl_loadi(bs), b1v = tl_loadi(bs + TL_TOK);                       \
                    for (int r = 0; r < R; r++) {                                                      \
                        if (Q6) {                                                                      \
                            is[r] = tl_addi(is[r], tl_mullo(tl_subi(s0[r], tl_shl(b0v, 5)),            \
                                                            tl_set1i(sm[r][2 * ch])));                 \
                            is[r] = tl_addi(is[r], tl_mullo(tl_subi(s1[r], tl_shl(b1v, 5)),            \
                                                            tl_set1i(sm[r][2 * ch + 1])));             \
                        } else {                                                                       \
                            is[r] = tl_addi(is[r], tl_mullo(tl_addi(s0[r], s1[r]),                     \
                                                            tl_set1i((uint8_t)sm[r][ch])));            \
                            ms[r] = tl_addi(ms[r], tl_mullo(tl_addi(b0v, b1v),                         \
                                                            tl_set1i((uint8_t)sm[r][8 + ch])));        \
                        }                                                                              \
                    }                                                                                  \
                }                                                                                      \
                const tl_vf dx = tl_loadf(x->d + TL_TOK * b);                                          \
                for (int r = 0; r < R; r++) {                                                          \
                    const T *wb = (const T *)wr[r] + b;                                                \
                    tl_vf tt = tl_mul(tl_mul(tl_set1f(h2f(wb->d)), dx), tl_cvt(is[r]));                \
                    if (!(Q6)) tt = tl_sub(tt, tl_mul(tl_mul(tl_set1f(KMIN(wb, 0)), dx), tl_cvt(ms[r])));    \
                    acc[r][j8] = tl_add(acc[r][j8], tt);                                               \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < R; r++) tl_store_row(acc[r], nt, y + r, ldy);                              \
    }                                                                                                  \
    TILE_ENTRY(name, 256)
KTILE_FN(tile_q4_k, nb_block_q4_K, tl_prep_q4_k, 0, KMIN_DMIN)
KTILE_FN(tile_q6_k, nb_block_q6_K, tl_prep_q6_k, 1, KMIN_NONE)

/* Q3_K's 16 signed 6-bit scales (nb_kern_scale_q3k for j = 0..15) as bytes:
 * low 4 bits from bytes 0..7 (low nibbles for j < 8, high for j >= 8), high
 * 2 bits from bytes 8..11 (bit pair j / 4 of byte 8 + j % 4). */
INL __m128i q3k_scales(const uint8_t *p) {
    uint32_t u[3];
    memcpy(u, p, 12);
    const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const __m128i v = _mm_setr_epi32((int)((u[0] & m4) | ((u[2] & m2) << 4)),
                                     (int)((u[1] & m4) | (((u[2] >> 2) & m2) << 4)),
                                     (int)(((u[0] >> 4) & m4) | (((u[2] >> 4) & m2) << 4)),
                                     (int)(((u[1] >> 4) & m4) | (((u[2] >> 6) & m2) << 4)));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

/* Q3_K with unsigned codes low | hbit << 2 (0..7): is = sum sc*(code.q) - 4 * sum sc*bsum */
INL void body_q3_k(const nb_block_q3_K *wb, const int8_t *q0, const int16_t *bs, __m256i *vi, __m256i *vm) {
    const __m256i m3 = _mm256_set1_epi8(3), b2 = _mm256_set1_epi8(4);
    const __m128i sc8 = q3k_scales(wb->scales);
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load256(bs));
    const __m256i hm = load256(wb->hmask);
    __m256i ai = _mm256_setzero_si256();
    for (int k = 0; k < 2; k++) {
        const int8_t *q = q0 + 128 * k;
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(k ? _mm_srli_si128(sc8, 8) : sc8));
        const __m256i qv = load256(wb->qs + 32 * k);
        /* hmask bit 4k + j moved to bit 2 */
        const __m256i h = k ? _mm256_srli_epi16(hm, 4) : hm;
        __m256i u0 = _mm256_or_si256(_mm256_and_si256(qv, m3), _mm256_and_si256(_mm256_slli_epi16(h, 2), b2));
        __m256i u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 2), m3),
                                     _mm256_and_si256(_mm256_slli_epi16(h, 1), b2));
        __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 4), m3), _mm256_and_si256(h, b2));
        __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 6), m3),
                                     _mm256_and_si256(_mm256_srli_epi16(h, 1), b2));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, load256(q)), pair16(s16, 0)));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, load256(q + 32)), pair16(s16, 1)));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(_mm256_maddubs_epi16(u2, load256(q + 64)), pair16(s16, 2)));
        ai = _mm256_add_epi32(ai, _mm256_madd_epi16(_mm256_maddubs_epi16(u3, load256(q + 96)), pair16(s16, 3)));
    }
    *vi = _mm256_sub_epi32(ai, _mm256_slli_epi32(corr, 2));
    *vm = _mm256_setzero_si256();
}
KDOT_FN(dot_q3_k, nb_block_q3_K, body_q3_k, 0, KMIN_NONE)

/* Q2_K: codes 0..3, scale byte g = low nibble scale | high nibble min:
 * is = sum sc*(code.q), ms = sum min*bsum */
typedef struct q2k_prep {
    __m256i u[8], sc[8], mins;
} q2k_prep;
INL void prep_q2_k(const nb_block_q2_K *wb, q2k_prep *p) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i sb = load128(wb->scales), m4 = _mm_set1_epi8(15);
    const __m128i sc8 = _mm_and_si128(sb, m4);
    p->mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), m4));
    for (int k = 0; k < 2; k++) {
        const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(k ? _mm_srli_si128(sc8, 8) : sc8));
        const __m256i qv = load256(wb->qs + 32 * k);
        for (int i = 0; i < 4; i++) {
            p->u[4 * k + i] = _mm256_and_si256(i ? _mm256_srli_epi16(qv, 2 * i) : qv, m3);
            p->sc[4 * k + i] = pair16(s16, i);
        }
    }
}
INL void mul_q2_k(const q2k_prep *p, const int8_t *q, const int16_t *bs, __m256i *vi, __m256i *vm) {
    __m256i ai = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) ai = madd_acc(ai, _mm256_maddubs_epi16(p->u[i], load256(q + 32 * i)), p->sc[i]);
    *vi = ai;
    *vm = _mm256_madd_epi16(p->mins, load256(bs));
}
KDOT4_FN(dot_q2_k, nb_block_q2_K, q2k_prep, prep_q2_k, mul_q2_k, 1, KMIN_DMIN)

/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales ls - 32, codes through the
 * IQ4_NL table; unpacked once per super-block for 1..4 tokens: the signed
 * code values, their magnitudes (for maddubs) and each sub-block's scale */
typedef struct iq4xs_prep {
    __m256i v[8], a[8], sc[8];
} iq4xs_prep;
INL void prep_iq4_xs(const nb_block_iq4_xs *wb, iq4xs_prep *p) {
    const __m256i tab = table16(nb_kvalues_iq4nl);
    for (int ib = 0; ib < 8; ib++) {
        const int ls = ((wb->scales_l[ib / 2] >> 4 * (ib % 2)) & 15) | (((wb->scales_h >> 2 * ib) & 3) << 4);
        p->v[ib] = _mm256_shuffle_epi8(tab, nib32(wb->qs + 16 * ib));
        p->a[ib] = _mm256_abs_epi8(p->v[ib]);
        p->sc[ib] = _mm256_set1_epi16((short)(ls - 32));
    }
}
INL void mul_iq4_xs(const iq4xs_prep *p, const int8_t *q, const int16_t *bs, __m256i *vi, __m256i *vm) {
    (void)bs;
    __m256i ai = _mm256_setzero_si256();
    for (int ib = 0; ib < 8; ib++) {
        const __m256i pr = _mm256_maddubs_epi16(p->a[ib], _mm256_sign_epi8(load256(q + 32 * ib), p->v[ib]));
        ai = madd_acc(ai, pr, p->sc[ib]);
    }
    *vi = ai;
    *vm = _mm256_setzero_si256();
}
KDOT4_FN(dot_iq4_xs, nb_block_iq4_xs, iq4xs_prep, prep_iq4_xs, mul_iq4_xs, 0, KMIN_NONE)

/* ------------------------------------------------------------ row-lane kernels on packed weights */

#ifdef NB_X86_ZMM
/* One weight row per int32 lane, 16 rows (one packed group, kernels_impl.h)
 * per 512-bit vector: chunk c's exact integer product for the 16 rows is
 * sum_k vpdpbusd(unsigned codes 4k..4k+3 of each row, activation bytes
 * 4k..4k+3 of the token broadcast to every lane), minus the code offset
 * times the activation block's sum (OFF: log2 of the offset); the float step
 * is generic.c's (float)isum * (dw * dx) per lane, chunk c into accumulator
 * c % 8 in increasing c, and the 8 accumulators are reduced in
 * nb_kern_acc_sum's order: each output is the 1-token dot bit for bit. The
 * weights are unpacked once per chunk for up to PK_TB tokens. UTAB: the
 * unsigned code book (index -> code + 2^OFF) for the code-book types, NULL
 * for Q4_0 (the index is the unsigned code); SK: the scales' kind (pk_scales). */
#define PK_TB 8

INL __m512i pk_bcast4(const int8_t *q) {
    int32_t v;
    memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

/* chunk record p's 8 code vectors (lane r: 4 unsigned codes of row r);
 * CB: code bytes of a record (512: bytes as they are, 256: nibbles, 320:
 * nibbles and fifth bits) */
INL void pk_unpack(const uint8_t *p, const uint8_t *utab, __m512i u[8], const int CB) {
    if (CB == 512) {
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) u[k] = _mm512_loadu_si512(p + 64 * k);
        return;
    }
    const __m512i m4 = _mm512_set1_epi8(15);
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        const __m512i v = _mm512_loadu_si512(p + 64 * i);
        __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if (utab) {
            const __m512i tab = _mm512_broadcast_i32x4(load128(utab));
            lo = _mm512_shuffle_epi8(tab, lo);
            hi = _mm512_shuffle_epi8(tab, hi);
        }
        u[2 * i] = lo;
        u[2 * i + 1] = hi;
    }
    if (CB == 320) { /* Q5_0: the fifth bit of element 4k + b is bit k of its byte */
        const __m512i h = _mm512_loadu_si512(p + 256), sixteen = _mm512_set1_epi8(16);
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
            u[k] = _mm512_mask_add_epi8(u[k], _mm512_test_epi8_mask(h, _mm512_set1_epi8((char)(1 << k))), u[k], sixteen);
    }
}

/* the float contribution of chunk c for token x (16 lanes: the group's rows) */
INL __m512 pk_chunk(const __m512i u[8], const nb_xq *x, int64_t c, __m512 dw, __m512 mw, const int OFF,
                    const int SK) {
    const int8_t *q = x->qs + 32 * c;
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    _Pragma("GCC unroll 4") for (int k = 0; k < 8; k += 2) {
        s0 = _mm512_dpbusd_epi32(s0, u[k], pk_bcast4(q + 4 * k));
        s1 = _mm512_dpbusd_epi32(s1, u[k + 1], pk_bcast4(q + 4 * k + 4));
    }
    const __m512 dx = _mm512_set1_ps(x->d[c]);
    if (SK == 2) { /* value = code * d + m: generic's two terms */
        const __m512 tt = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, dx));
        return _mm512_add_ps(tt, _mm512_mul_ps(_mm512_set1_ps((float)x->s[c]), _mm512_mul_ps(mw, dx)));
    }
    const __m512i is = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32((int32_t)x->s[c] * (1 << OFF)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dw, dx));
}

/* chunk c's 16 scales (sc: the group's scales). SK 0: F32 per block of two
 * chunks (NF4); 1: F16 per chunk; 2: F16 d then F16 m per chunk (Q4_1) */
INL __m512 pk_scales(const uint8_t *sc, int64_t c, const int SK, __m512 *mw) {
    if (SK == 2) {
        *mw = _mm512_cvtph_ps(load256(sc + 64 * c + 32));
        return _mm512_cvtph_ps(load256(sc + 64 * c));
    }
    *mw = _mm512_setzero_ps();
    return SK ? _mm512_cvtph_ps(load256(sc + 32 * c)) : _mm512_loadu_ps(sc + 64 * (c / 2));
}

INL __m512 pk_tree(const __m512 a[8]) {
    return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
                         _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7])));
}

/* TB (1, 2) tokens: all 8 accumulators of each token in registers, the
 * chunks in file order (a generation step streams the weights once) */
INL void pk_seq(int64_t nc, const uint8_t *gp, const uint8_t *sc, const uint8_t *utab, const nb_xq *x, float *y,
                int64_t ldy, const int TB, const int OFF, const int SK, const int CB) {
    __m512 acc[2][8];
    for (int t = 0; t < TB; t++)
        for (int j = 0; j < 8; j++) acc[t][j] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nc; c0 += 8)
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            const int64_t c = c0 + j;
            if (c >= nc) break;
            __m512i u[8];
            nb_prefetch_ahead((const char *)gp + (uint64_t)c * CB, CB);
            _mm_prefetch((const char *)sc + (uint64_t)c * (SK == 2 ? 64 : 32) + NB_PF_DIST / 8, _MM_HINT_T0);
            pk_unpack(gp + (uint64_t)c * CB, utab, u, CB);
            __m512 mw;
            const __m512 dw = pk_scales(sc, c, SK, &mw);
            for (int t = 0; t < TB; t++) acc[t][j] = _mm512_add_ps(acc[t][j], pk_chunk(u, x + t, c, dw, mw, OFF, SK));
        }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(y + t * ldy, pk_tree(acc[t]));
}

/* TB (3..PK_TB) tokens: accumulator j of every token at a time (chunks j,
 * j + 8, ...: the same order per accumulator), then the 8 reduced */
INL void pk_jout(int64_t nc, const uint8_t *gp, const uint8_t *sc, const uint8_t *utab, const nb_xq *x, float *y,
                 int64_t ldy, const int TB, const int OFF, const int SK, const int CB) {
    __m512 part[PK_TB][8];
    for (int j = 0; j < 8; j++) {
        __m512 acc[PK_TB];
        for (int t = 0; t < TB; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t c = j; c < nc; c += 8) {
            __m512i u[8];
            pk_unpack(gp + (uint64_t)c * CB, utab, u, CB);
            __m512 mw;
            const __m512 dw = pk_scales(sc, c, SK, &mw);
            for (int t = 0; t < TB; t++) acc[t] = _mm512_add_ps(acc[t], pk_chunk(u, x + t, c, dw, mw, OFF, SK));
        }
        for (int t = 0; t < TB; t++) part[t][j] = acc[t];
    }
    for (int t = 0; t < TB; t++) _mm512_storeu_ps(y + t * ldy, pk_tree(part[t]));
}

#define PTILE_FN(name, UTAB, OFF, SK, CB)                                                                \
    static void name(int64_t n, const void *wp, int64_t n_grp, const nb_xq *x, int nt, float *y, int64_t ldy) { \
        const int64_t nc = n / 32;                                                                     \
        const uint64_t cb = (CB) + NB_PACK_ROWS * ((SK) == 2 ? 4 : 2); /* scale bytes per chunk */    \
        for (int64_t g = 0; g < n_grp; g++) {                                                          \
            const uint8_t *gp = (const uint8_t *)wp + (uint64_t)g * (uint64_t)nc * cb;                 \
            const uint8_t *sc = gp + (uint64_t)nc * (CB);                                              \
            float *yg = y + NB_PACK_ROWS * g;                                                          \
            int t = 0;                                                                                 \
            for (; t + PK_TB <= nt; t += PK_TB) pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, PK_TB, OFF, SK, CB); \
            switch (nt - t) {                                                                          \
            case 1: pk_seq(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 1, OFF, SK, CB); break;          \
            case 2: pk_seq(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 2, OFF, SK, CB); break;          \
            case 3: pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 3, OFF, SK, CB); break;         \
            case 4: pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 4, OFF, SK, CB); break;         \
            case 5: pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 5, OFF, SK, CB); break;         \
            case 6: pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 6, OFF, SK, CB); break;         \
            case 7: pk_jout(nc, gp, sc, UTAB, x + t, yg + t * ldy, ldy, 7, OFF, SK, CB); break;         \
            default: break;                                                                            \
            }                                                                                          \
        }                                                                                              \
    }

/* unsigned code books: nb_kvalues_iq4nl / nb_kern_nf4_i8 + 128 as bytes
 * (tests/kernels compare every packed kernel with generic.c's dot) */
static const uint8_t pk_utab_iq4_nl[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};
static const uint8_t pk_utab_nf4[16] = {1, 40, 61, 78, 92, 105, 116, 128, 138, 148, 159, 171, 184, 199, 220, 255};
PTILE_FN(ptile_q4_0, (const uint8_t *)NULL, 3, 1, 256)
PTILE_FN(ptile_iq4_nl, pk_utab_iq4_nl, 7, 1, 256)
PTILE_FN(ptile_nf4, pk_utab_nf4, 7, 0, 256)
PTILE_FN(ptile_q8_0, (const uint8_t *)NULL, 7, 1, 512)
PTILE_FN(ptile_q5_0, (const uint8_t *)NULL, 4, 1, 320)
PTILE_FN(ptile_q4_1, (const uint8_t *)NULL, 0, 2, 256)
#endif

static void x86_fill(nb_kernels *k) {
    k->quant_q32 = quant_q32;
    k->quant_q256 = quant_q256;
    k->dot[NB_TYPE_F32] = dot_f32;
    k->dot[NB_TYPE_F16] = dot_f16;
    k->dot[NB_TYPE_BF16] = dot_bf16;
    k->ftile[NB_TYPE_F32] = ftile_f32;
    k->ftile[NB_TYPE_F16] = ftile_f16;
    k->ftile[NB_TYPE_BF16] = ftile_bf16;
    k->dot[NB_TYPE_Q4_0] = dot_q4_0;
    k->dot4[NB_TYPE_Q4_0] = dot_q4_0_x4;
    k->dot[NB_TYPE_Q4_1] = dot_q4_1;
    k->dot4[NB_TYPE_Q4_1] = dot_q4_1_x4;
    k->dot[NB_TYPE_Q5_0] = dot_q5_0;
    k->dot4[NB_TYPE_Q5_0] = dot_q5_0_x4;
    k->dot[NB_TYPE_Q5_1] = dot_q5_1;
    k->dot4[NB_TYPE_Q5_1] = dot_q5_1_x4;
    k->dot[NB_TYPE_Q8_0] = dot_q8_0;
    k->dot4[NB_TYPE_Q8_0] = dot_q8_0_x4;
    k->dot[NB_TYPE_IQ4_NL] = dot_iq4_nl;
    k->dot4[NB_TYPE_IQ4_NL] = dot_iq4_nl_x4;
    k->dot[NB_TYPE_NF4] = dot_nf4;
    k->dot4[NB_TYPE_NF4] = dot_nf4_x4;
    k->dot[NB_TYPE_INT4_SYM_G32] = dot_int4_s32;
    k->dot4[NB_TYPE_INT4_SYM_G32] = dot_int4_s32_x4;
    k->dot[NB_TYPE_INT4_SYM_G64] = dot_int4_s64;
    k->dot4[NB_TYPE_INT4_SYM_G64] = dot_int4_s64_x4;
    k->dot[NB_TYPE_INT4_SYM_G128] = dot_int4_s128;
    k->dot4[NB_TYPE_INT4_SYM_G128] = dot_int4_s128_x4;
    k->dot[NB_TYPE_INT4_ASYM_G32] = dot_int4_a32;
    k->dot4[NB_TYPE_INT4_ASYM_G32] = dot_int4_a32_x4;
    k->dot[NB_TYPE_INT4_ASYM_G64] = dot_int4_a64;
    k->dot4[NB_TYPE_INT4_ASYM_G64] = dot_int4_a64_x4;
    k->dot[NB_TYPE_INT4_ASYM_G128] = dot_int4_a128;
    k->dot4[NB_TYPE_INT4_ASYM_G128] = dot_int4_a128_x4;
    k->dot[NB_TYPE_Q2_K] = dot_q2_k;
    k->dot4[NB_TYPE_Q2_K] = dot_q2_k_x4;
    k->dot[NB_TYPE_Q3_K] = dot_q3_k;
    k->dot[NB_TYPE_Q4_K] = dot_q4_k;
    k->dot4[NB_TYPE_Q4_K] = dot_q4_k_x4;
    k->dot[NB_TYPE_Q5_K] = dot_q5_k;
    k->dot[NB_TYPE_Q6_K] = dot_q6_k;
    k->dot4[NB_TYPE_Q6_K] = dot_q6_k_x4;
    k->dot[NB_TYPE_IQ4_XS] = dot_iq4_xs;
    k->dot4[NB_TYPE_IQ4_XS] = dot_iq4_xs_x4;
    k->tile_tok = TL_TOK;
    k->tile[NB_TYPE_Q4_0] = tile_q4_0;
    k->tile[NB_TYPE_Q4_1] = tile_q4_1;
    k->tile[NB_TYPE_Q5_0] = tile_q5_0;
    k->tile[NB_TYPE_Q5_1] = tile_q5_1;
    k->tile[NB_TYPE_Q4_K] = tile_q4_k;
    k->tile[NB_TYPE_Q6_K] = tile_q6_k;
#ifdef NB_X86_ZMM
    k->tile[NB_TYPE_Q8_0] = tile_q8_0;
    k->tile[NB_TYPE_IQ4_NL] = tile_iq4_nl;
    k->tile[NB_TYPE_NF4] = tile_nf4;
    k->ptile[NB_TYPE_Q4_0] = ptile_q4_0;
    k->ptile[NB_TYPE_IQ4_NL] = ptile_iq4_nl;
    k->ptile[NB_TYPE_NF4] = ptile_nf4;
    k->ptile[NB_TYPE_Q8_0] = ptile_q8_0;
    k->ptile[NB_TYPE_Q5_0] = ptile_q5_0;
    k->ptile[NB_TYPE_Q4_1] = ptile_q4_1;
#endif
}

