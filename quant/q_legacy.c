/* quant/q_legacy.c — ggml's original block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * Blocks of 32. Without importance (imp == NULL) these are ggml's
 * quantize_row_<t>_ref: one absmax (or min/max) scale per block and
 * round-half-up codes. With imp, Q4_0/Q4_1/Q5_0/Q5_1 run ggml's weighted scale
 * search (quantize_row_<t>_impl) with weights imp[j] * sqrt(sigma2 + x[j]^2),
 * sigma2 being the mean square of the whole row. Q8_0 and Q8_1 ignore imp.
 */
#include "quant/codes_impl.h"
#include "quant/ggml_quants_impl.h"

#include <float.h>
#include <math.h>
#include <string.h>

static size_t row_blocks(int64_t n_per_row) {
    assert(n_per_row % 32 == 0);
    return (size_t)(n_per_row / 32);
}

/* Mean of x^2 over a row, as ggml's *_impl computes it (float accumulation). */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

static void block_weights(const float *xb, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < 32; ++j) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* Pack 32 5-bit codes: low nibbles like Q4 (j | j+16 << 4), 5th bits into qh. */
static void pack_q5(const uint8_t *L, uint8_t *qs, uint8_t qh_out[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        const uint8_t xi0 = L[j], xi1 = L[j + 16];
        qs[j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
        qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; ++k) qh_out[k] = (uint8_t)(qh >> (8 * k)); /* little-endian, like ggml's memcpy */
}

/* Absmax with sign kept: the first element of largest magnitude (ggml's tie rule). */
static float signed_absmax(const float *x) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        const float v = x[j];
        if (amax < fabsf(v)) {
            amax = fabsf(v);
            max = v;
        }
    }
    return max;
}

static void min_max(const float *x, float *mn, float *mx) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        const float v = x[j];
        if (v < min) min = v;
        if (v > max) max = v;
    }
    *mn = min;
    *mx = max;
}

/* ---------------------------------------------------------------- Q4_0 */

static void q4_0_ref(const float *x, nb_block_q4_0 *y) {
    const float max = signed_absmax(x);
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y->d = nb_gq_f2h(d);
    for (int j = 0; j < 16; ++j) {
        const float x0 = x[0 + j] * id, x1 = x[16 + j] * id;
        /* ggml: MIN(15, (int8_t)(x0 + 8.5f)); the argument lies in [0, 17) for finite input */
        const int xi0 = nb_gq_min(15, (int8_t)nb_gq_trunc(x0 + 8.5f));
        const int xi1 = nb_gq_min(15, (int8_t)nb_gq_trunc(x1 + 8.5f));
        y->qs[j] = (uint8_t)((uint8_t)xi0 | ((unsigned)(uint8_t)xi1 << 4));
    }
}

size_t nb_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q4_0 *y = dst;
    float w[32];
    int8_t L[32];
    for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {
        const float sigma2 = imp ? row_sigma2(src, n_per_row) : 0;
        for (size_t ib = 0; ib < nb; ++ib, ++y) {
            const float *xb = src + 32 * ib;
            if (!imp) {
                q4_0_ref(xb, y);
                continue;
            }
            block_weights(xb, imp + 32 * ib, sigma2, w);
            const float d = nb_gq_make_qx_quants(32, 8, xb, L, w);
            y->d = nb_gq_f2h(d);
            for (int j = 0; j < 16; ++j) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        }
    }
    return (size_t)nrows * nb * sizeof(nb_block_q4_0);
}

void nb_dequant_q4_0(const void *src, float *y, int64_t n) {
    const nb_block_q4_0 *x = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        const float d = nb_gq_h2f(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + 16] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* ---------------------------------------------------------------- Q4_1 */

static void q4_1_ref(const float *x, nb_block_q4_1 *y) {
    float min, max;
    min_max(x, &min, &max);
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y->d = nb_gq_f2h(d);
    y->m = nb_gq_f2h(min);
    for (int j = 0; j < 16; ++j) {
        const float x0 = (x[0 + j] - min) * id, x1 = (x[16 + j] - min) * id;
        const int xi0 = nb_gq_min(15, (int8_t)nb_gq_trunc(x0 + 0.5f));
        const int xi1 = nb_gq_min(15, (int8_t)nb_gq_trunc(x1 + 0.5f));
        y->qs[j] = (uint8_t)((uint8_t)xi0 | ((unsigned)(uint8_t)xi1 << 4));
    }
}

size_t nb_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q4_1 *y = dst;
    float w[32];
    uint8_t L[32], Laux[32];
    for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {
        const float sigma2 = imp ? row_sigma2(src, n_per_row) : 0;
        for (size_t ib = 0; ib < nb; ++ib, ++y) {
            const float *xb = src + 32 * ib;
            if (!imp) {
                q4_1_ref(xb, y);
                continue;
            }
            block_weights(xb, imp + 32 * ib, sigma2, w);
            float min;
            const float d = nb_gq_make_qkx3_quants(32, 15, xb, w, L, &min, Laux, -0.9f, 0.05f, 36, false);
            y->d = nb_gq_f2h(d);
            y->m = nb_gq_f2h(-min);
            for (int j = 0; j < 16; ++j) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
        }
    }
    return (size_t)nrows * nb * sizeof(nb_block_q4_1);
}

void nb_dequant_q4_1(const void *src, float *y, int64_t n) {
    const nb_block_q4_1 *x = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        const float d = nb_gq_h2f(x[i].d), m = nb_gq_h2f(x[i].m);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)(x[i].qs[j] & 0x0F) * d + m;
            y[j + 16] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* ---------------------------------------------------------------- Q5_0 */

static void q5_0_ref(const float *x, nb_block_q5_0 *y) {
    const float max = signed_absmax(x);
    const float d = max / -16;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y->d = nb_gq_f2h(d);
    uint8_t L[32];
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)nb_gq_min(31, (int8_t)nb_gq_trunc(x[j] * id + 16.5f));
    pack_q5(L, y->qs, y->qh);
}

size_t nb_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q5_0 *y = dst;
    float w[32];
    int8_t L[32];
    uint8_t U[32];
    for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {
        const float sigma2 = imp ? row_sigma2(src, n_per_row) : 0;
        for (size_t ib = 0; ib < nb; ++ib, ++y) {
            const float *xb = src + 32 * ib;
            if (!imp) {
                q5_0_ref(xb, y);
                continue;
            }
            block_weights(xb, imp + 32 * ib, sigma2, w);
            const float d = nb_gq_make_qx_quants(32, 16, xb, L, w);
            y->d = nb_gq_f2h(d);
            for (int j = 0; j < 32; ++j) U[j] = (uint8_t)L[j];
            pack_q5(U, y->qs, y->qh);
        }
    }
    return (size_t)nrows * nb * sizeof(nb_block_q5_0);
}

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

void nb_dequant_q5_0(const void *src, float *y, int64_t n) {
    const nb_block_q5_0 *x = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        const float d = nb_gq_h2f(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; ++j) {
            const int xh0 = (int)((qh >> j) << 4) & 0x10, xh1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (float)(((x[i].qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + 16] = (float)(((x[i].qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

/* ---------------------------------------------------------------- Q5_1 */

static void q5_1_ref(const float *x, nb_block_q5_1 *y) {
    float min, max;
    min_max(x, &min, &max);
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y->d = nb_gq_f2h(d);
    y->m = nb_gq_f2h(min);
    uint8_t L[32];
    /* ggml: (uint8_t)(x0 + 0.5f), no clamp; the value lies in [0, 32) for finite input */
    for (int j = 0; j < 32; ++j) L[j] = (uint8_t)nb_gq_trunc((x[j] - min) * id + 0.5f);
    pack_q5(L, y->qs, y->qh);
}

size_t nb_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q5_1 *y = dst;
    float w[32];
    uint8_t L[32], Laux[32];
    for (int64_t r = 0; r < nrows; ++r, src += n_per_row) {
        const float sigma2 = imp ? row_sigma2(src, n_per_row) : 0;
        for (size_t ib = 0; ib < nb; ++ib, ++y) {
            const float *xb = src + 32 * ib;
            if (!imp) {
                q5_1_ref(xb, y);
                continue;
            }
            block_weights(xb, imp + 32 * ib, sigma2, w);
            float min;
            const float d = nb_gq_make_qkx3_quants(32, 31, xb, w, L, &min, Laux, -0.9f, 0.05f, 36, false);
            y->d = nb_gq_f2h(d);
            y->m = nb_gq_f2h(-min);
            pack_q5(L, y->qs, y->qh);
        }
    }
    return (size_t)nrows * nb * sizeof(nb_block_q5_1);
}

void nb_dequant_q5_1(const void *src, float *y, int64_t n) {
    const nb_block_q5_1 *x = src;
    for (int64_t i = 0; i < n / 32; i++, y += 32) {
        const float d = nb_gq_h2f(x[i].d), m = nb_gq_h2f(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; ++j) {
            const int xh0 = (int)((qh >> j) << 4) & 0x10, xh1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (float)((x[i].qs[j] & 0x0F) | xh0) * d + m;
            y[j + 16] = (float)((x[i].qs[j] >> 4) | xh1) * d + m;
        }
    }
}

/* ---------------------------------------------------------------- Q8_0 / Q8_1 */

/* roundf of a value in [-127.5, 127.5] (wider input wraps like ggml's conversion). */
static int8_t round_i8(float v) {
    /* roundf (half away from zero) without the libm call it compiles to on
     * baseline x86-64: for |v| < 2^23, v - trunc(v) is exact. */
    if (!(fabsf(v) < 8388608.0f)) return (int8_t)nb_gq_trunc(roundf(v));
    float t = (float)(int32_t)v;
    float r = t + copysignf((float)(fabsf(v - t) >= 0.5f), v); /* branch-free: halves are random */
    return (int8_t)nb_gq_trunc(r);
}

size_t nb_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp; /* ggml's Q8_0 has no weighted path */
    const size_t nb = row_blocks(n_per_row);
    nb_block_q8_0 *y = dst;
    const float *x = src;
    for (size_t i = 0; i < (size_t)nrows * nb; ++i, ++y, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / ((1 << 7) - 1);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y->d = nb_gq_f2h(d);
        for (int j = 0; j < 32; ++j) y->qs[j] = round_i8(x[j] * id);
    }
    return (size_t)nrows * nb * sizeof(nb_block_q8_0);
}

void nb_dequant_q8_0(const void *src, float *y, int64_t n) {
    const nb_block_q8_0 *x = src;
    for (int64_t i = 0; i < n / 32; i++) {
        const float d = nb_gq_h2f(x[i].d);
        for (int j = 0; j < 32; ++j) *y++ = (float)x[i].qs[j] * d;
    }
}

size_t nb_quantize_q8_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp;
    const size_t nb = row_blocks(n_per_row);
    nb_block_q8_1 *y = dst;
    const float *x = src;
    for (size_t i = 0; i < (size_t)nrows * nb; ++i, ++y, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / ((1 << 7) - 1);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y->d = nb_gq_f2h(d);
        int sum = 0;
        for (int j = 0; j < 32; ++j) {
            y->qs[j] = round_i8(x[j] * id);
            sum += y->qs[j];
        }
        y->s = nb_gq_f2h((float)sum * d);
    }
    return (size_t)nrows * nb * sizeof(nb_block_q8_1);
}

void nb_dequant_q8_1(const void *src, float *y, int64_t n) {
    const nb_block_q8_1 *x = src;
    for (int64_t i = 0; i < n / 32; i++) {
        const float d = nb_gq_h2f(x[i].d);
        for (int j = 0; j < 32; ++j) *y++ = (float)x[i].qs[j] * d;
    }
}

/* ---- GPTQ set-code hooks (nb_set_code_fn): code `lv` of element p ------------------------- */

/* element p's code in qs[p % 16], low nibble for p < 16 */
void nb_set_code_q4_0(void *b, int p, int lv) { nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q4_0, qs) + p % 16, p >= 16, lv); }
void nb_set_code_q4_1(void *b, int p, int lv) { nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q4_1, qs) + p % 16, p >= 16, lv); }
/* low 4 bits as Q4, the 5th = bit p of the little-endian u32 qh */
void nb_set_code_q5_0(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q5_0, qs) + p % 16, p >= 16, lv & 15);
    nb_set_bit(NB_BLOCK_FIELD(b, nb_block_q5_0, qh) + p / 8, p % 8, lv >> 4);
}
void nb_set_code_q5_1(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q5_1, qs) + p % 16, p >= 16, lv & 15);
    nb_set_bit(NB_BLOCK_FIELD(b, nb_block_q5_1, qh) + p / 8, p % 8, lv >> 4);
}
/* levels 0..254 = int8 codes -127..127 (ggml never writes -128) */
void nb_set_code_q8_0(void *b, int p, int lv) { NB_BLOCK_FIELD(b, nb_block_q8_0, qs)[p] = (uint8_t)(int8_t)(lv - 127); }
