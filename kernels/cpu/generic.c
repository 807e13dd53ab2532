/* kernels/cpu/generic.c — every matmul kernel in portable C, and the
 * activation quantizers.
 *
 * These define the canonical results (kernels_impl.h): the SIMD files must
 * reproduce the integer kernels bit for bit, so each per-chunk float
 * expression here is the contract (evaluated without fused multiply-add; the
 * library is compiled as ISO C11, where GCC does not contract, and clang is
 * told so in kernels_impl.h).
 */
#include "kernels/cpu/kernels_impl.h"

#include "core/fp.h"
#include "quant/ggml_quants.h"
#include "quant/int4.h"
#include "quant/nf4.h"

#include <float.h>
#include <math.h>
#include <string.h>

const int8_t nb_kern_nf4_i8[16] = {-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127};

/* ------------------------------------------------------------ activations */

/* Below this amax a block quantizes to zeros: 1/d would overflow for
 * subnormal d (and such activations contribute nothing measurable). */
#define NB_KERN_AMAX_MIN 1e-30f

/* One block of `len` floats -> codes; returns the scale (NaN if non-finite). */
static float quant_block(const float *x, int len, int8_t *qs) {
    float amax = 0.f;
    int bad = 0;
    for (int i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        if (!(a <= FLT_MAX)) bad = 1;
        else if (a > amax) amax = a;
    }
    if (bad || amax < NB_KERN_AMAX_MIN) {
        memset(qs, 0, (size_t)len);
        return bad ? NAN : 0.f;
    }
    const float d = amax / 127.f, id = 1.f / d;
    for (int i = 0; i < len; i++) {
        int32_t q = nb_kern_rne(x[i] * id);
        qs[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    return d;
}

static void quant_q32(const float *x, int64_t n, int8_t *qs, float *d, int16_t *s) {
    for (int64_t b = 0; b < n / 32; b++) {
        d[b] = quant_block(x + 32 * b, 32, qs + 32 * b);
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += qs[32 * b + i];
        s[b] = (int16_t)sum;
    }
}

static void quant_q256(const float *x, int64_t n, int8_t *qs, float *d, int16_t *s) {
    for (int64_t b = 0; b < n / 256; b++) d[b] = quant_block(x + 256 * b, 256, qs + 256 * b);
    for (int64_t g = 0; g < n / 16; g++) {
        int sum = 0;
        for (int i = 0; i < 16; i++) sum += qs[16 * g + i];
        s[g] = (int16_t)sum;
    }
}

/* ------------------------------------------------------------ float weights */

/* 8 partial sums, element i into lane i % 8, no FMA. */
static float dot_f32_buf(const float *a, const float *b, int64_t n, float s[8]) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[i & 7] += a[i] * b[i];
    return 0.f;
}

static float dot_f32(int64_t n, const void *w, const void *x) {
    float s[8] = {0};
    dot_f32_buf(w, x, n, s);
    return nb_kern_acc_sum(s);
}

/* F16/BF16: convert 256 at a time (exact), same lane order as dot_f32. */
static float dot_f16(int64_t n, const void *w, const void *x) {
    const uint16_t *h = w;
    const float *xf = x;
    float buf[256], s[8] = {0};
    for (int64_t i = 0; i < n; i += 256) {
        int64_t len = n - i < 256 ? n - i : 256;
        nb_f16_to_f32_n(h + i, buf, (size_t)len);
        dot_f32_buf(buf, xf + i, len, s);
    }
    return nb_kern_acc_sum(s);
}

static float dot_bf16(int64_t n, const void *w, const void *x) {
    const uint16_t *h = w;
    const float *xf = x;
    float buf[256], s[8] = {0};
    for (int64_t i = 0; i < n; i += 256) {
        int64_t len = n - i < 256 ? n - i : 256;
        nb_bf16_to_f32_n(h + i, buf, (size_t)len);
        dot_f32_buf(buf, xf + i, len, s);
    }
    return nb_kern_acc_sum(s);
}

/* ------------------------------------------------------------ 32-element blocks */

static inline float h2f(uint16_t h) { return nb_f16_to_f32(h); }

static float dot_q8_0(int64_t n, const void *vw, const void *vx) {
    const nb_block_q8_0 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 32; j++) is += w[c].qs[j] * q[j];
        acc[c & 7] += (float)is * (h2f(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

static float dot_q4_0(int64_t n, const void *vw, const void *vx) {
    const nb_block_q4_0 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 16; j++) is += ((w[c].qs[j] & 15) - 8) * q[j] + ((w[c].qs[j] >> 4) - 8) * q[j + 16];
        acc[c & 7] += (float)is * (h2f(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

/* value = code * d + m: sum = d*dx*sum(code*q) + m*dx*sum(q) */
static float dot_q4_1(int64_t n, const void *vw, const void *vx) {
    const nb_block_q4_1 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 16; j++) is += (w[c].qs[j] & 15) * q[j] + (w[c].qs[j] >> 4) * q[j + 16];
        const float dx = x->d[c];
        acc[c & 7] += (float)is * (h2f(w[c].d) * dx) + (float)x->s[c] * (h2f(w[c].m) * dx);
    }
    return nb_kern_acc_sum(acc);
}

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float dot_q5_0(int64_t n, const void *vw, const void *vx) {
    const nb_block_q5_0 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        const uint32_t qh = load_u32(w[c].qh);
        int32_t is = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (w[c].qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (w[c].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            is += (lo - 16) * q[j] + (hi - 16) * q[j + 16];
        }
        acc[c & 7] += (float)is * (h2f(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

static float dot_q5_1(int64_t n, const void *vw, const void *vx) {
    const nb_block_q5_1 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        const uint32_t qh = load_u32(w[c].qh);
        int32_t is = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (w[c].qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
            int hi = (w[c].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            is += lo * q[j] + hi * q[j + 16];
        }
        const float dx = x->d[c];
        acc[c & 7] += (float)is * (h2f(w[c].d) * dx) + (float)x->s[c] * (h2f(w[c].m) * dx);
    }
    return nb_kern_acc_sum(acc);
}

static float dot_iq4_nl(int64_t n, const void *vw, const void *vx) {
    const nb_block_iq4_nl *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 16; j++)
            is += nb_kvalues_iq4nl[w[c].qs[j] & 15] * q[j] + nb_kvalues_iq4nl[w[c].qs[j] >> 4] * q[j + 16];
        acc[c & 7] += (float)is * (h2f(w[c].d) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

/* NF4 (64 per block, fp32 absmax, element 2i in the HIGH nibble of qs[i]):
 * codes become int8 (nb_kern_nf4_i8, ~code * 127), so the weight scale of a
 * chunk is absmax * (1/127). Two 32-element chunks per block. */
static float dot_nf4(int64_t n, const void *vw, const void *vx) {
    const nb_block_nf4 *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const nb_block_nf4 *b = w + c / 2;
        const uint8_t *qs = b->qs + 16 * (c & 1);
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 16; j++)
            is += nb_kern_nf4_i8[qs[j] >> 4] * q[2 * j] + nb_kern_nf4_i8[qs[j] & 15] * q[2 * j + 1];
        acc[c & 7] += (float)is * ((b->d * (1.f / 127.f)) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

/* INT4 group-wise (element 2i in the LOW nibble): value = d * (q - z), z = 8
 * for the symmetric types. A group of G spans G/32 chunks. The format's zero
 * point is 0..15; the kernels read z & 15 (a corrupt byte cannot push a
 * product outside int8 in the SIMD versions). */
static inline float dot_int4(int64_t n, const uint8_t *w, int G, int asym, const nb_xq *x) {
    const int per = G / 32;
    const size_t bsz = 2 + (asym ? 2 : 0) + (size_t)G / 2;
    float acc[8] = {0};
    for (int64_t c = 0; c < n / 32; c++) {
        const uint8_t *b = w + (size_t)(c / per) * bsz;
        uint16_t dh;
        memcpy(&dh, b, 2);
        const int z = asym ? (b[2] & 15) : 8;
        const uint8_t *qs = b + (asym ? 4 : 2) + 16 * (c % per);
        const int8_t *q = x->qs + 32 * c;
        int32_t is = 0;
        for (int j = 0; j < 16; j++) is += ((qs[j] & 15) - z) * q[2 * j] + ((qs[j] >> 4) - z) * q[2 * j + 1];
        acc[c & 7] += (float)is * (h2f(dh) * x->d[c]);
    }
    return nb_kern_acc_sum(acc);
}

#define NB_INT4_DOT(name, G, A) \
    static float name(int64_t n, const void *w, const void *x) { return dot_int4(n, w, G, A, x); }
NB_INT4_DOT(dot_int4_s32, 32, 0)
NB_INT4_DOT(dot_int4_s64, 64, 0)
NB_INT4_DOT(dot_int4_s128, 128, 0)
NB_INT4_DOT(dot_int4_a32, 32, 1)
NB_INT4_DOT(dot_int4_a64, 64, 1)
NB_INT4_DOT(dot_int4_a128, 128, 1)

/* ------------------------------------------------------------ K-quants (256) */

/* Super-block b: acc[b % 8] += (d*dx) * is - (dmin*dx) * ms. */
static float dot_q4_k(int64_t n, const void *vw, const void *vx) {
    const nb_block_q4_K *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_q4_K *wb = w + b;
        const int8_t *q = x->qs + 256 * b;
        const int16_t *bs = x->s + 16 * b;
        int32_t is = 0, ms = 0;
        for (int j = 0; j < 4; j++) {
            int sc1, m1, sc2, m2;
            nb_kern_scale_min_k4(2 * j, wb->scales, &sc1, &m1);
            nb_kern_scale_min_k4(2 * j + 1, wb->scales, &sc2, &m2);
            int32_t s1 = 0, s2 = 0;
            for (int l = 0; l < 32; l++) {
                s1 += (wb->qs[32 * j + l] & 15) * q[64 * j + l];
                s2 += (wb->qs[32 * j + l] >> 4) * q[64 * j + 32 + l];
            }
            is += sc1 * s1 + sc2 * s2;
            ms += m1 * (bs[4 * j] + bs[4 * j + 1]) + m2 * (bs[4 * j + 2] + bs[4 * j + 3]);
        }
        const float dx = x->d[b];
        acc[b & 7] += (h2f(wb->d) * dx) * (float)is - (h2f(wb->dmin) * dx) * (float)ms;
    }
    return nb_kern_acc_sum(acc);
}

static float dot_q5_k(int64_t n, const void *vw, const void *vx) {
    const nb_block_q5_K *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_q5_K *wb = w + b;
        const int8_t *q = x->qs + 256 * b;
        const int16_t *bs = x->s + 16 * b;
        int32_t is = 0, ms = 0;
        for (int j = 0; j < 4; j++) {
            int sc1, m1, sc2, m2;
            nb_kern_scale_min_k4(2 * j, wb->scales, &sc1, &m1);
            nb_kern_scale_min_k4(2 * j + 1, wb->scales, &sc2, &m2);
            int32_t s1 = 0, s2 = 0;
            for (int l = 0; l < 32; l++) {
                int lo = (wb->qs[32 * j + l] & 15) | (((wb->qh[l] >> (2 * j)) & 1) << 4);
                int hi = (wb->qs[32 * j + l] >> 4) | (((wb->qh[l] >> (2 * j + 1)) & 1) << 4);
                s1 += lo * q[64 * j + l];
                s2 += hi * q[64 * j + 32 + l];
            }
            is += sc1 * s1 + sc2 * s2;
            ms += m1 * (bs[4 * j] + bs[4 * j + 1]) + m2 * (bs[4 * j + 2] + bs[4 * j + 3]);
        }
        const float dx = x->d[b];
        acc[b & 7] += (h2f(wb->d) * dx) * (float)is - (h2f(wb->dmin) * dx) * (float)ms;
    }
    return nb_kern_acc_sum(acc);
}

/* Q6_K: acc[b % 8] += (d*dx) * is, is = sum_g sc[g] * sum (code - 32) * q. */
static float dot_q6_k(int64_t n, const void *vw, const void *vx) {
    const nb_block_q6_K *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_q6_K *wb = w + b;
        int32_t is = 0;
        for (int k = 0; k < 2; k++) {
            const uint8_t *ql = wb->ql + 64 * k, *qh = wb->qh + 32 * k;
            const int8_t *sc = wb->scales + 8 * k;
            const int8_t *q = x->qs + 256 * b + 128 * k;
            int32_t g[8] = {0};
            for (int l = 0; l < 32; l++) {
                const int h = l / 16;
                g[h + 0] += (((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32) * q[l];
                g[h + 2] += (((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32) * q[l + 32];
                g[h + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * q[l + 64];
                g[h + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * q[l + 96];
            }
            for (int j = 0; j < 8; j++) is += sc[j] * g[j];
        }
        acc[b & 7] += (h2f(wb->d) * x->d[b]) * (float)is;
    }
    return nb_kern_acc_sum(acc);
}

/* Q3_K: element 128k + 32j + 16h + l has low bits (qs[32k+16h+l] >> 2j) & 3,
 * minus 4 unless bit 4k+j of hmask[16h+l] is set; scale 8k + 2j + h. */
static float dot_q3_k(int64_t n, const void *vw, const void *vx) {
    const nb_block_q3_K *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_q3_K *wb = w + b;
        const int8_t *q = x->qs + 256 * b;
        int32_t is = 0;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    int32_t s = 0;
                    for (int l = 0; l < 16; l++) {
                        const int i = 16 * h + l;
                        int v = ((wb->qs[32 * k + i] >> (2 * j)) & 3) - (((wb->hmask[i] >> (4 * k + j)) & 1) ? 0 : 4);
                        s += v * q[128 * k + 32 * j + i];
                    }
                    is += nb_kern_scale_q3k(8 * k + 2 * j + h, wb->scales) * s;
                }
        acc[b & 7] += (h2f(wb->d) * x->d[b]) * (float)is;
    }
    return nb_kern_acc_sum(acc);
}

/* Q2_K: element 128k + 32j + 16h + l = (qs[32k+16h+l] >> 2j) & 3, scale byte
 * 8k + 2j + h (low nibble scale, high nibble min). */
static float dot_q2_k(int64_t n, const void *vw, const void *vx) {
    const nb_block_q2_K *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_q2_K *wb = w + b;
        const int8_t *q = x->qs + 256 * b;
        const int16_t *bs = x->s + 16 * b;
        int32_t is = 0, ms = 0;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 4; j++)
                for (int h = 0; h < 2; h++) {
                    int32_t s = 0;
                    for (int l = 0; l < 16; l++) {
                        const int i = 16 * h + l;
                        s += ((wb->qs[32 * k + i] >> (2 * j)) & 3) * q[128 * k + 32 * j + i];
                    }
                    const int g = 8 * k + 2 * j + h;
                    is += (wb->scales[g] & 15) * s;
                    ms += (wb->scales[g] >> 4) * bs[g];
                }
        const float dx = x->d[b];
        acc[b & 7] += (h2f(wb->d) * dx) * (float)is - (h2f(wb->dmin) * dx) * (float)ms;
    }
    return nb_kern_acc_sum(acc);
}

static float dot_iq4_xs(int64_t n, const void *vw, const void *vx) {
    const nb_block_iq4_xs *w = vw;
    const nb_xq *x = vx;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 256; b++) {
        const nb_block_iq4_xs *wb = w + b;
        int32_t is = 0;
        for (int ib = 0; ib < 8; ib++) {
            const int ls = ((wb->scales_l[ib / 2] >> 4 * (ib % 2)) & 15) | (((wb->scales_h >> 2 * ib) & 3) << 4);
            const uint8_t *qs = wb->qs + 16 * ib;
            const int8_t *q = x->qs + 256 * b + 32 * ib;
            int32_t s = 0;
            for (int j = 0; j < 16; j++)
                s += nb_kvalues_iq4nl[qs[j] & 15] * q[j] + nb_kvalues_iq4nl[qs[j] >> 4] * q[j + 16];
            is += (ls - 32) * s;
        }
        acc[b & 7] += (h2f(wb->d) * x->d[b]) * (float)is;
    }
    return nb_kern_acc_sum(acc);
}

/* The kernel table's rows: per weight type its dot kernel and the activation
 * format it pairs with (ggml's vec_dot_type). The format is ISA-independent:
 * the other fillers replace dot functions only. */
static const struct {
    nb_type type;
    nb_vdot_fn dot;
    nb_act_fmt act;
} k_rows[] = {
    {NB_TYPE_F32, dot_f32, NB_ACT_F32},
    {NB_TYPE_F16, dot_f16, NB_ACT_F32},
    {NB_TYPE_BF16, dot_bf16, NB_ACT_F32},
    {NB_TYPE_Q4_0, dot_q4_0, NB_ACT_Q32},
    {NB_TYPE_Q4_1, dot_q4_1, NB_ACT_Q32},
    {NB_TYPE_Q5_0, dot_q5_0, NB_ACT_Q32},
    {NB_TYPE_Q5_1, dot_q5_1, NB_ACT_Q32},
    {NB_TYPE_Q8_0, dot_q8_0, NB_ACT_Q32},
    {NB_TYPE_IQ4_NL, dot_iq4_nl, NB_ACT_Q32},
    {NB_TYPE_NF4, dot_nf4, NB_ACT_Q32},
    {NB_TYPE_INT4_SYM_G32, dot_int4_s32, NB_ACT_Q32},
    {NB_TYPE_INT4_SYM_G64, dot_int4_s64, NB_ACT_Q32},
    {NB_TYPE_INT4_SYM_G128, dot_int4_s128, NB_ACT_Q32},
    {NB_TYPE_INT4_ASYM_G32, dot_int4_a32, NB_ACT_Q32},
    {NB_TYPE_INT4_ASYM_G64, dot_int4_a64, NB_ACT_Q32},
    {NB_TYPE_INT4_ASYM_G128, dot_int4_a128, NB_ACT_Q32},
    {NB_TYPE_Q2_K, dot_q2_k, NB_ACT_Q256},
    {NB_TYPE_Q3_K, dot_q3_k, NB_ACT_Q256},
    {NB_TYPE_Q4_K, dot_q4_k, NB_ACT_Q256},
    {NB_TYPE_Q5_K, dot_q5_k, NB_ACT_Q256},
    {NB_TYPE_Q6_K, dot_q6_k, NB_ACT_Q256},
    {NB_TYPE_IQ4_XS, dot_iq4_xs, NB_ACT_Q256},
};

nb_act_fmt nb_kern_act_fmt(nb_type t) {
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++)
        if (k_rows[i].type == t) return k_rows[i].act;
    return NB_ACT_NONE;
}

void nb_kern_fill_generic(nb_kernels *k) {
    memset(k, 0, sizeof *k);
    k->isa = "generic";
    k->quant_q32 = quant_q32;
    k->quant_q256 = quant_q256;
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++) {
        k->dot[k_rows[i].type] = k_rows[i].dot;
        k->act[k_rows[i].type] = k_rows[i].act;
    }
    nb_kern_fill_attn_generic(k);
}
