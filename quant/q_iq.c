/* quant/q_iq.c — non-linear and ternary ggml types: IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4.
 *
 * IQ4_NL / IQ4_XS map each element to one of 16 fixed non-uniform levels
 * (nb_kvalues_iq4nl) times a block scale. llama-quantize always runs ggml's
 * search (quantize_iq4_nl / quantize_iq4_xs -> quantize_row_iq4_nl_impl with
 * ntry = 7): weights x^2 without an imatrix, imp[j] * sqrt(sigma2 + x^2) with
 * one; nb_quantize_iq4_* reproduce that path bit for bit.
 * TQ1_0 / TQ2_0 (ternary, BitNet-style) and MXFP4 (OCP microscaling FP4)
 * follow ggml's quantize_row_<t>_ref; they take no importance.
 *
 * Not provided: the grid-based IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS, IQ3_S. Their code books are large tables produced by an offline
 * search in ggml; they cannot be derived here and are not copied.
 */
#include "quant/codes_impl.h"
#include "quant/ggml_quants_impl.h"

#include <math.h>
#include <string.h>

const int8_t nb_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
const int8_t nb_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Index of the level nearest to x in the sorted table val[16]; at an exact
 * midpoint the upper level wins. Comparing 2x with val[j-1] + val[j] keeps
 * both sides exact (ggml's best_index_int8). NaN maps to 0. */
static inline int best_index_iq4(const int8_t *val, float x) {
    const float x2 = x + x;
    int idx = 0;
    for (int step = 8; step > 0; step >>= 1) {
        const int j = idx + step;
        idx = (x2 >= (float)(val[j - 1] + val[j])) ? j : idx;
    }
    return idx;
}

/* ggml's quantize_row_iq4_nl_impl for 16 levels and sub-blocks of 32.
 *   sbs: super-block size (32 for IQ4_NL, 256 for IQ4_XS)
 *   x: sbs elements; qw: sbs importances or NULL
 *   dh, q4 (sbs/2 bytes), scales_h / scales_l (IQ4_XS only, else unused)
 */
static void iq4_impl(int sbs, const float *x, uint16_t *dh, uint8_t *q4, uint16_t *scales_h,
                     uint8_t *scales_l, const float *qw, int ntry) {
    const int8_t *values = nb_kvalues_iq4nl;
    float scales[NB_QK_K / 32], weight[32];
    uint8_t L[NB_QK_K];
    float sigma2 = 0;
    for (int j = 0; j < sbs; ++j) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / (float)sbs;

    memset(q4, 0, (size_t)sbs / 2);
    dh[0] = nb_gq_f2h(0.f);

    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < sbs / 32; ++ib) {
        const float *xb = x + ib * 32;
        uint8_t *Lb = L + ib * 32;
        if (qw) {
            const float *q = qw + ib * 32;
            for (int j = 0; j < 32; ++j) weight[j] = q[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        } else {
            for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
        }
        float amax = 0, max = 0;
        for (int j = 0; j < 32; ++j) {
            float ax = fabsf(xb[j]);
            if (ax > amax) { amax = ax; max = xb[j]; }
        }
        if (amax < NB_GQ_GROUP_MAX_EPS) {
            scales[ib] = 0;
            memset(Lb, 0, 32);
            continue;
        }
        float d = ntry > 0 ? -max / (float)values[0] : max / (float)values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
            int l = best_index_iq4(values, id * xb[j]);
            Lb[j] = (uint8_t)l;
            float q = (float)values[l], w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; ++itry) {
            id = (float)(itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; ++j) {
                int l = best_index_iq4(values, id * xb[j]);
                float q = (float)values[l], w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        float abs_d = fabsf(d);
        if (abs_d > amax_scale) {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if (sbs / 32 > 1) {
        memset(scales_h, 0, sizeof *scales_h); /* ((nb + 7) / 8) uint16 for nb = 8 */
        float d = -max_scale / 32;
        dh[0] = nb_gq_f2h(d);
        float id = d != 0 ? 1 / d : 0.f;
        for (int ib = 0; ib < sbs / 32; ++ib) {
            int l = nb_gq_nearest_int(id * scales[ib]);
            l = nb_gq_max(-32, nb_gq_min(31, l));
            float dl = d * (float)l; /* the unrounded d, as in ggml */
            float idl = dl != 0 ? 1 / dl : 0.f;
            uint8_t *Lb = L + ib * 32;
            const float *xb = x + ib * 32;
            for (int j = 0; j < 32; ++j) Lb[j] = (uint8_t)best_index_iq4(values, idl * xb[j]);
            l += 32;
            const uint8_t l_l = (uint8_t)(l & 0xf), l_h = (uint8_t)(l >> 4);
            if (ib % 2 == 0) scales_l[ib / 2] = l_l;
            else scales_l[ib / 2] = (uint8_t)(scales_l[ib / 2] | (l_l << 4));
            scales_h[ib / 8] = (uint16_t)(scales_h[ib / 8] | (l_h << 2 * (ib % 8)));
        }
    } else {
        dh[0] = nb_gq_f2h(scales[0]);
        if (ntry > 0) {
            float id = scales[0] != 0 ? 1 / scales[0] : 0;
            for (int j = 0; j < sbs; ++j) L[j] = (uint8_t)best_index_iq4(values, id * x[j]);
        }
    }
    for (int i = 0; i < sbs / 32; ++i)
        for (int j = 0; j < 16; ++j) q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

size_t nb_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    assert(n_per_row % NB_QK4_NL == 0);
    const size_t nb = (size_t)(n_per_row / NB_QK4_NL);
    nb_block_iq4_nl *y = dst;
    uint16_t unused_h;
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += NB_QK4_NL)
            iq4_impl(NB_QK4_NL, src, &y->d, y->qs, &unused_h, NULL, imp ? imp + NB_QK4_NL * i : NULL, 7);
    return (size_t)nrows * nb * sizeof(nb_block_iq4_nl);
}

void nb_dequant_iq4_nl(const void *src, float *y, int64_t n) {
    const nb_block_iq4_nl *x = src;
    for (int64_t i = 0; i < n / NB_QK4_NL; i++, y += NB_QK4_NL) {
        const float d = nb_gq_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * (float)nb_kvalues_iq4nl[x[i].qs[j] & 0xf];
            y[j + 16] = d * (float)nb_kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

size_t nb_quantize_iq4_xs(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    assert(n_per_row % NB_QK_K == 0);
    const size_t nb = (size_t)(n_per_row / NB_QK_K);
    nb_block_iq4_xs *y = dst;
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += NB_QK_K)
            iq4_impl(NB_QK_K, src, &y->d, y->qs, &y->scales_h, y->scales_l, imp ? imp + NB_QK_K * i : NULL, 7);
    return (size_t)nrows * nb * sizeof(nb_block_iq4_xs);
}

void nb_dequant_iq4_xs(const void *src, float *y, int64_t n) {
    const nb_block_iq4_xs *x = src;
    for (int64_t i = 0; i < n / NB_QK_K; i++) {
        const uint8_t *qs = x[i].qs;
        const float d = nb_gq_h2f(x[i].d);
        for (int ib = 0; ib < NB_QK_K / 32; ++ib) {
            const int ls = ((x[i].scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((x[i].scales_h >> 2 * ib) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; ++j) {
                y[j + 0] = dl * (float)nb_kvalues_iq4nl[qs[j] & 0xf];
                y[j + 16] = dl * (float)nb_kvalues_iq4nl[qs[j] >> 4];
            }
            y += 32;
            qs += 16;
        }
    }
}

/* ---------------------------------------------------------------- TQ1_0 / TQ2_0 */

/* Ternary code of x: lroundf(x * id) + 1, i.e. 0, 1, 2 for -1, 0, +1. */
static int trit(float v) {
    /* finite input gives |v| <= 1; NaN (from Inf input) is mapped to 0 so that
     * lroundf never sees it and the packing arithmetic cannot overflow */
    if (!(v >= -2.f && v <= 2.f)) return 1;
    return (int)lroundf(v) + 1;
}

/* Absmax scale of a 256-block; returns 1/d or 0 and stores d as fp16. */
static float absmax_inv(const float *x, uint16_t *dh) {
    float amax = 0;
    for (int j = 0; j < NB_QK_K; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
    *dh = nb_gq_f2h(amax);
    return amax != 0 ? 1.0f / amax : 0.0f;
}

/* Base-3 digits packed as a fixed-point fraction of 256: byte = ceil(v * 256 / 243). */
static uint8_t pack_trits(unsigned v) { return (uint8_t)((v * 256 + (243 - 1)) / 243); }

size_t nb_quantize_tq1_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp;
    assert(n_per_row % NB_QK_K == 0);
    const size_t nb = (size_t)(n_per_row / NB_QK_K) * (size_t)nrows;
    nb_block_tq1_0 *y = dst;
    const float *x = src;
    for (size_t i = 0; i < nb; i++, y++) {
        const float id = absmax_inv(x, &y->d);
        /* qs[0..32): 5 trits each from x[m + n*32]; qs[32..48): from x[m + n*16] */
        for (int m = 0; m < 32; ++m) {
            uint8_t q = 0;
            for (int k = 0; k < 5; ++k) q = (uint8_t)(q * 3 + trit(x[m + k * 32] * id));
            y->qs[m] = pack_trits(q);
        }
        x += 5 * 32;
        for (int m = 0; m < 16; ++m) {
            uint8_t q = 0;
            for (int k = 0; k < 5; ++k) q = (uint8_t)(q * 3 + trit(x[m + k * 16] * id));
            y->qs[32 + m] = pack_trits(q);
        }
        x += 5 * 16;
        /* qh: 4 trits each, shifted up one trit */
        for (int j = 0; j < 4; ++j) {
            uint8_t q = 0;
            for (int m = 0; m < 4; ++m) q = (uint8_t)(q * 3 + trit(x[j + m * 4] * id));
            q = (uint8_t)(q * 3);
            y->qh[j] = pack_trits(q);
        }
        x += 16;
    }
    return nb * sizeof(nb_block_tq1_0);
}

/* Trit n (0 = most significant) of a packed byte, as -1, 0, +1. */
static float unpack_trit(uint8_t byte, int n) {
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    const uint8_t q = (uint8_t)(byte * pow3[n]);
    const int xi = (int)(((unsigned)q * 3u) >> 8);
    return (float)(xi - 1);
}

void nb_dequant_tq1_0(const void *src, float *y, int64_t n) {
    const nb_block_tq1_0 *x = src;
    for (int64_t i = 0; i < n / NB_QK_K; ++i) {
        const float d = nb_gq_h2f(x[i].d);
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 32; ++m) *y++ = unpack_trit(x[i].qs[m], k) * d;
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 16; ++m) *y++ = unpack_trit(x[i].qs[32 + m], k) * d;
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j) *y++ = unpack_trit(x[i].qh[j], k) * d;
    }
}

size_t nb_quantize_tq2_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp;
    assert(n_per_row % NB_QK_K == 0);
    const size_t nb = (size_t)(n_per_row / NB_QK_K) * (size_t)nrows;
    nb_block_tq2_0 *y = dst;
    const float *x = src;
    for (size_t i = 0; i < nb; i++, y++) {
        const float id = absmax_inv(x, &y->d);
        for (int j = 0; j < 64; j += 32) {
            for (int m = 0; m < 32; ++m) {
                unsigned q = 0;
                for (int k = 0; k < 4; ++k) q += ((unsigned)trit(x[m + k * 32] * id) & 3u) << (2 * k);
                y->qs[j + m] = (uint8_t)q;
            }
            x += 4 * 32;
        }
    }
    return nb * sizeof(nb_block_tq2_0);
}

void nb_dequant_tq2_0(const void *src, float *y, int64_t n) {
    const nb_block_tq2_0 *x = src;
    for (int64_t i = 0; i < n / NB_QK_K; ++i) {
        const float d = nb_gq_h2f(x[i].d);
        for (int j = 0; j < 64; j += 32)
            for (int l = 0; l < 4; ++l)
                for (int m = 0; m < 32; ++m) *y++ = (float)(((x[i].qs[j + m] >> (l * 2)) & 3) - 1) * d;
    }
}

/* ---------------------------------------------------------------- MXFP4 */

/* E8M0 exponent -> 2^(e-127) / 2 (the levels are doubled E2M1 values). */
static float e8m0_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint8_t best_index_mxfp4(float x, float e) {
    int best = 0;
    float best_err = fabsf((float)nb_kvalues_mxfp4[0] * e - x);
    for (int i = 1; i < 16; i++) {
        float err = fabsf((float)nb_kvalues_mxfp4[i] * e - x);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return (uint8_t)best;
}

size_t nb_quantize_mxfp4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp;
    assert(n_per_row % NB_QK_MXFP4 == 0);
    const size_t nb = (size_t)(n_per_row / NB_QK_MXFP4) * (size_t)nrows;
    nb_block_mxfp4 *y = dst;
    const float *x = src;
    for (size_t i = 0; i < nb; i++, y++, x += NB_QK_MXFP4) {
        float amax = 0;
        for (int j = 0; j < NB_QK_MXFP4; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        /* ggml converts this float straight to uint8_t; going through int keeps
         * the same low byte without undefined behaviour for tiny amax */
        const uint8_t e = amax > 0.0f ? (uint8_t)nb_gq_trunc(floorf(log2f(amax)) - 2 + 127) : 0;
        const float d = e8m0_half(e);
        y->e = e;
        for (int j = 0; j < 16; ++j)
            y->qs[j] = (uint8_t)(best_index_mxfp4(x[j], d) | (best_index_mxfp4(x[16 + j], d) << 4));
    }
    return nb * sizeof(nb_block_mxfp4);
}

void nb_dequant_mxfp4(const void *src, float *y, int64_t n) {
    const nb_block_mxfp4 *x = src;
    for (int64_t i = 0; i < n / NB_QK_MXFP4; i++, y += NB_QK_MXFP4) {
        const float d = e8m0_half(x[i].e);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)nb_kvalues_mxfp4[x[i].qs[j] & 0x0F] * d;
            y[j + 16] = (float)nb_kvalues_mxfp4[x[i].qs[j] >> 4] * d;
        }
    }
}

/* ---- GPTQ set-code hooks (nb_set_code_fn): code `lv` of element p ------------------------- */

/* IQ4_NL as Q4_0: element p's code in qs[p % 16], low nibble for p < 16 */
void nb_set_code_iq4_nl(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_iq4_nl, qs) + p % 16, p >= 16, lv);
}
/* IQ4_XS: sub-block p/32 of 16 bytes, laid out as IQ4_NL */
void nb_set_code_iq4_xs(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_iq4_xs, qs) + 16 * (p / 32) + p % 16, p % 32 >= 16, lv);
}
