/* quant/nf4.c — bitsandbytes NF4 (see quant/nf4.h for the exact semantics).
 *
 * Bit-exactness needs plain IEEE fp32 evaluation: no contraction of a*b+c
 * into fused multiply-add (the library builds with -std=c11, which makes GCC
 * default to -ffp-contract=off; clang is told below). The one place where
 * bitsandbytes' numbers *do* come from fused multiply-adds — torch's fp32
 * linspace inside create_dynamic_map — calls fmaf() explicitly. */
#include "quant/nf4.h"

#include "quant/codes_impl.h"


#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off)
#endif

/* bitsandbytes' NF4 values and dQuantizeNF4's 15 thresholds (midpoints of
 * neighbouring codes), written as the float literals of csrc/kernels.cu.
 * They must be parsed straight from decimal to float: going through double
 * first (double rounding) moves the lowest threshold by one ulp, since
 * -0.8480964004993439 lies almost exactly between two floats. */
const float nb_nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

static const float g_thr[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,  0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,  0.8614784181118011f,
};

/* The signed dynamic map, built once (read-only afterwards); pthread_once
 * makes the lazy build safe from any thread. */
static float g_dynmap[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void nb_dynamic_map_signed(float out[256]) {
    /* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
     * exponent i = 0..6 take k = 2^i + 1 points of torch.linspace(0.1, 1, k)
     * (fp32), the k-1 means of neighbours, scaled by fp32(10^(i-6)); both
     * signs; plus 0 and 1.0; sorted. torch's linspace computes
     * start + step*idx for the first half and end - step*(k-1-idx) for the
     * second half, contracted to fused multiply-adds in its vectorised CPU
     * build — which is what bitsandbytes' shipped nested maps contain. */
    static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int k = (1 << i) + 1;
        float b[65];
        const float start = 0.1f, end = 1.0f;
        float step = (end - start) / (float)(k - 1);
        for (int j = 0; j < k; j++) {
            b[j] = j < k / 2 ? fmaf(step, (float)j, start) : fmaf(-step, (float)(k - 1 - j), end);
        }
        float p = (float)pow10[i];
        for (int j = 0; j + 1 < k; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            out[n++] = p * mean;
            out[n++] = -(p * mean);
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    qsort(out, 256, sizeof(float), cmp_float);
}

static void build_tables(void) { nb_dynamic_map_signed(g_dynmap); }

static const float *thresholds(void) { return g_thr; }

static const float *dynmap(void) {
    pthread_once(&g_once, build_tables);
    return g_dynmap;
}

/* dQuantizeNF4 is a balanced tree of `x > t` tests over ascending
 * thresholds; its result equals the number of thresholds x exceeds (0 for
 * NaN, for which every test is false). */
static inline uint8_t nf4_index_t(const float *thr, float x) {
    uint8_t k = 0;
    for (int i = 0; i < 15; i++) k = (uint8_t)(k + (x > thr[i]));
    return k;
}

uint8_t nb_nf4_index(float x) { return nf4_index_t(thresholds(), x); }

uint8_t nb_dynmap_index(const float code[256], float x) {
    /* dQuantize<STOCHASTIC=0>: 7 halving steps from the middle with strict
     * `>`, then the nearer of pivot and the last neighbour on x's side,
     * decided against the fp32 midpoint (ties keep the pivot). */
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float mid = (upper + val) * 0.5f;
        return (uint8_t)(x > mid ? upper_pivot : pivot);
    }
    float mid = (lower + val) * 0.5f;
    return (uint8_t)(x < mid ? lower_pivot : pivot);
}

/* ---- block helpers ---------------------------------------------------------- */

static float absmax_of(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* Weighted squared error of one block quantized with scale s (values
 * normalised by the fp32 reciprocal, as bnb does). */
static double nf4_block_err(const float *thr, const float *x, const float *w, int64_t n, float s) {
    float inv = 1.0f / s;
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float q = nb_nf4_code[nf4_index_t(thr, x[i] * inv)] * s;
        double d = (double)x[i] - (double)q;
        e += (double)w[i] * d * d;
    }
    return e;
}

/* Scale for one block: absmax (bnb-exact) unless importance weights are
 * given, then the candidate in {absmax * f : f = 0.70, 0.71, ..., 1.00} plus
 * the least-squares rescale of the best candidate's codes that minimises
 * sum(w * (x - code * s)^2). absmax wins ties. */
static float nf4_pick_scale(const float *thr, const float *x, const float *w, int64_t n) {
    float amax = absmax_of(x, n);
    if (!w || !(amax > 0.0f) || !isfinite(amax)) return amax;
    double wsum = 0.0;
    for (int64_t i = 0; i < n; i++) wsum += w[i] > 0.0f ? (double)w[i] : 0.0;
    if (!(wsum > 0.0)) return amax;
    float best = amax;
    double best_err = nf4_block_err(thr, x, w, n, amax);
    for (int f = 99; f >= 70; f--) {
        float s = amax * ((float)f / 100.0f);
        double e = nf4_block_err(thr, x, w, n, s);
        if (e < best_err) {
            best_err = e;
            best = s;
        }
    }
    /* one least-squares refinement with the best candidate's codes */
    float inv = 1.0f / best;
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double c = nb_nf4_code[nf4_index_t(thr, x[i] * inv)];
        num += (double)w[i] * (double)x[i] * c;
        den += (double)w[i] * c * c;
    }
    if (den > 0.0) {
        float s = (float)(num / den);
        if (s > 0.0f && isfinite(s)) {
            double e = nf4_block_err(thr, x, w, n, s);
            if (e < best_err) best = s;
        }
    }
    return best;
}

/* Encode 2*nbytes elements with scale s into nbytes (high nibble first). */
static void nf4_encode(const float *thr, const float *x, int64_t nbytes, float s, uint8_t *qs) {
    float inv = 1.0f / s;
    for (int64_t i = 0; i < nbytes; i++) {
        uint8_t hi = nf4_index_t(thr, x[2 * i] * inv);
        uint8_t lo = nf4_index_t(thr, x[2 * i + 1] * inv);
        qs[i] = (uint8_t)(hi << 4 | lo);
    }
}

/* Second-level quantization of up to 256 absmax values (bnb quantize_blockwise
 * with the dynamic map, blocksize 256): returns absmax2, writes codes. */
static float dq_encode(const float *code, const float *amax, int64_t n, float offset, uint8_t *q) {
    float v[NB_NF4_DQ_NESTED];
    float a2 = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        v[j] = amax[j] - offset;
        a2 = fmaxf(a2, fabsf(v[j]));
    }
    float inv = 1.0f / a2;
    for (int64_t j = 0; j < n; j++) q[j] = nb_dynmap_index(code, v[j] * inv);
    return a2;
}

static inline float dq_absmax(const float *code, uint8_t q, float absmax2, float offset) {
    float a = code[q] * absmax2;
    return a + offset;
}

/* ---- flat-tensor API ----------------------------------------------------------- */

void nb_nf4_state_free(nb_nf4_state *s) {
    if (!s) return;
    free(s->packed);
    free(s->absmax);
    free(s->qabsmax);
    free(s->absmax2);
    memset(s, 0, sizeof *s);
}

static bool is_pow2_in(uint64_t v, uint64_t lo, uint64_t hi) {
    return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

nb_status nb_nf4_quantize_tensor(const float *x, uint64_t n, uint32_t blocksize, bool double_quant,
                                 nb_nf4_state *out, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !out, NB_ERR_INVALID, "nf4: output state is NULL");
    memset(out, 0, sizeof *out);
    NB_RETURN_IF(ctx, !x || n == 0, NB_ERR_INVALID, "nf4: empty input");
    NB_RETURN_IF(ctx, !is_pow2_in(blocksize, 32, 4096), NB_ERR_INVALID,
                 "nf4: blocksize %u is not a power of two in [32, 4096]", blocksize);
    NB_RETURN_IF(ctx, n > (uint64_t)SIZE_MAX / 2 - 1, NB_ERR_RANGE,
                 "nf4: %llu elements do not fit in memory", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return nb_err(ctx, NB_ERR_RANGE, "nf4: element %llu is %s; NF4 needs finite values",
                          (unsigned long long)i, isnan(x[i]) ? "NaN" : "infinite");
    }
    const float *thr = thresholds();
    const float *code = dynmap();
    nb_nf4_state *s = out;
    s->n = n;
    s->blocksize = blocksize;
    s->double_quant = double_quant;
    s->n_blocks = n / blocksize + (n % blocksize != 0);
    s->nested_blocksize = NB_NF4_DQ_NESTED;
    s->n_nested = s->n_blocks / NB_NF4_DQ_NESTED + (s->n_blocks % NB_NF4_DQ_NESTED != 0);
    memcpy(s->code, nb_nf4_code, sizeof s->code);
    memcpy(s->nested_code, code, sizeof s->nested_code);

    s->packed = nb_malloc(ctx, (size_t)((n + 1) / 2), "nf4 packed data");
    float *amax = nb_malloc(ctx, (size_t)s->n_blocks * sizeof(float), "nf4 absmax");
    if (!s->packed || !amax) {
        free(amax);
        nb_nf4_state_free(s);
        return NB_ERR_NOMEM;
    }
    for (uint64_t b = 0; b < s->n_blocks; b++) {
        uint64_t beg = b * blocksize;
        uint64_t len = n - beg < blocksize ? n - beg : blocksize;
        const float *xb = x + beg;
        float a = absmax_of(xb, (int64_t)len);
        amax[b] = a;
        float inv = 1.0f / a;
        /* blocksize is even, so a block starts on a byte boundary */
        uint8_t *qs = s->packed + beg / 2;
        uint64_t full = len / 2;
        nf4_encode(thr, xb, (int64_t)full, a, qs);
        if (len % 2) /* last element of an odd tensor; bnb pads the block with 0.0 */
            qs[full] = (uint8_t)(nf4_index_t(thr, xb[len - 1] * inv) << 4 | nf4_index_t(thr, 0.0f * inv));
    }
    if (!double_quant) {
        s->absmax = amax;
        return NB_OK;
    }
    double sum = 0.0;
    for (uint64_t b = 0; b < s->n_blocks; b++) sum += amax[b];
    s->offset = (float)(sum / (double)s->n_blocks);
    s->qabsmax = nb_malloc(ctx, (size_t)s->n_blocks, "nf4 quantized absmax");
    s->absmax2 = nb_malloc(ctx, (size_t)s->n_nested * sizeof(float), "nf4 absmax2");
    if (!s->qabsmax || !s->absmax2) {
        free(amax);
        nb_nf4_state_free(s);
        return NB_ERR_NOMEM;
    }
    for (uint64_t g = 0; g < s->n_nested; g++) {
        uint64_t beg = g * NB_NF4_DQ_NESTED;
        uint64_t len = s->n_blocks - beg < NB_NF4_DQ_NESTED ? s->n_blocks - beg : NB_NF4_DQ_NESTED;
        s->absmax2[g] = dq_encode(code, amax + beg, (int64_t)len, s->offset, s->qabsmax + beg);
    }
    free(amax);
    return NB_OK;
}

float nb_nf4_state_absmax(const nb_nf4_state *s, uint64_t b) {
    if (!s->double_quant) return s->absmax[b];
    return dq_absmax(s->nested_code, s->qabsmax[b], s->absmax2[b / s->nested_blocksize], s->offset);
}

nb_status nb_nf4_dequantize_tensor(const nb_nf4_state *s, float *y, nb_ctx *ctx) {
    NB_RETURN_IF(ctx, !s || !y, NB_ERR_INVALID, "nf4: NULL state or output");
    NB_RETURN_IF(ctx, s->n == 0 || !s->packed, NB_ERR_FORMAT, "nf4 state: no data");
    NB_RETURN_IF(ctx, !is_pow2_in(s->blocksize, 32, 4096), NB_ERR_FORMAT,
                 "nf4 state: blocksize %u is not a power of two in [32, 4096]", s->blocksize);
    uint64_t nb = s->n / s->blocksize + (s->n % s->blocksize != 0);
    NB_RETURN_IF(ctx, s->n_blocks != nb, NB_ERR_FORMAT,
                 "nf4 state: %llu absmax values for %llu elements in blocks of %u (expected %llu)",
                 (unsigned long long)s->n_blocks, (unsigned long long)s->n, s->blocksize,
                 (unsigned long long)nb);
    if (s->double_quant) {
        NB_RETURN_IF(ctx, !s->qabsmax || !s->absmax2, NB_ERR_FORMAT,
                     "nf4 state: nested state without quantized absmax or absmax2");
        NB_RETURN_IF(ctx, !is_pow2_in(s->nested_blocksize, 1, 4096), NB_ERR_FORMAT,
                     "nf4 state: nested blocksize %u is not a power of two in [1, 4096]",
                     s->nested_blocksize);
        uint64_t nn = nb / s->nested_blocksize + (nb % s->nested_blocksize != 0);
        NB_RETURN_IF(ctx, s->n_nested != nn, NB_ERR_FORMAT,
                     "nf4 state: %llu nested absmax values for %llu blocks (expected %llu)",
                     (unsigned long long)s->n_nested, (unsigned long long)nb, (unsigned long long)nn);
    } else {
        NB_RETURN_IF(ctx, !s->absmax, NB_ERR_FORMAT, "nf4 state: no absmax");
    }
    for (uint64_t b = 0; b < nb; b++) {
        float a = nb_nf4_state_absmax(s, b);
        uint64_t beg = b * s->blocksize;
        uint64_t end = beg + s->blocksize < s->n ? beg + s->blocksize : s->n;
        for (uint64_t e = beg; e < end; e++) {
            uint8_t byte = s->packed[e / 2];
            uint8_t q = (e % 2) ? (byte & 0x0F) : (byte >> 4);
            y[e] = nb_nf4_code[q] * a;
        }
    }
    return NB_OK;
}

/* ---- type-table hooks: NB_TYPE_NF4 ------------------------------------------------- */

void nb_dequant_nf4(const void *src, float *dst, int64_t n) {
    const nb_block_nf4 *b = src;
    for (int64_t i = 0; i < n / NB_NF4_BLOCK; i++) {
        float d = b[i].d;
        float *y = dst + i * NB_NF4_BLOCK;
        for (int j = 0; j < NB_NF4_BLOCK / 2; j++) {
            y[2 * j] = nb_nf4_code[b[i].qs[j] >> 4] * d;
            y[2 * j + 1] = nb_nf4_code[b[i].qs[j] & 0x0F] * d;
        }
    }
}

size_t nb_quantize_nf4(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    assert(n_per_row % NB_NF4_BLOCK == 0);
    const float *thr = thresholds();
    int64_t nbpr = n_per_row / NB_NF4_BLOCK;
    nb_block_nf4 *out = dst;
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nbpr; b++) {
            const float *x = src + r * n_per_row + b * NB_NF4_BLOCK;
            const float *w = imp ? imp + b * NB_NF4_BLOCK : NULL;
            nb_block_nf4 *blk = &out[r * nbpr + b];
            blk->d = nf4_pick_scale(thr, x, w, NB_NF4_BLOCK);
            nf4_encode(thr, x, NB_NF4_BLOCK / 2, blk->d, blk->qs);
        }
    }
    return (size_t)(nrows * nbpr) * sizeof(nb_block_nf4);
}

/* ---- type-table hooks: NB_TYPE_NF4_DQ ------------------------------------------------ */

void nb_dequant_nf4_dq(const void *src, float *dst, int64_t n) {
    const float *code = dynmap();
    const nb_block_nf4_dq *b = src;
    for (int64_t i = 0; i < n / NB_NF4_DQ_SUPER; i++) {
        for (int j = 0; j < NB_NF4_DQ_NESTED; j++) {
            float a = dq_absmax(code, b[i].qabsmax[j], b[i].absmax2, b[i].offset);
            const uint8_t *qs = b[i].qs + j * (NB_NF4_BLOCK / 2);
            float *y = dst + i * NB_NF4_DQ_SUPER + j * NB_NF4_BLOCK;
            for (int k = 0; k < NB_NF4_BLOCK / 2; k++) {
                y[2 * k] = nb_nf4_code[qs[k] >> 4] * a;
                y[2 * k + 1] = nb_nf4_code[qs[k] & 0x0F] * a;
            }
        }
    }
}

size_t nb_quantize_nf4_dq(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                          const float *imp) {
    assert(n_per_row % NB_NF4_DQ_SUPER == 0);
    const float *thr = thresholds();
    const float *code = dynmap();
    int64_t total = nrows * n_per_row;
    int64_t nblocks = total / NB_NF4_BLOCK;
    nb_block_nf4_dq *out = dst;
    /* pass 1: the tensor-wide mean of the block scales (bnb's offset) */
    double sum = 0.0;
    for (int64_t b = 0; b < nblocks; b++) {
        const float *x = src + b * NB_NF4_BLOCK;
        const float *w = imp ? imp + (b * NB_NF4_BLOCK) % n_per_row : NULL;
        sum += nf4_pick_scale(thr, x, w, NB_NF4_BLOCK);
    }
    float offset = nblocks ? (float)(sum / (double)nblocks) : 0.0f;
    /* pass 2: per super-block, recompute the 256 scales (same deterministic
     * choice), encode the nibbles with them and quantize them around offset */
    for (int64_t sb = 0; sb < total / NB_NF4_DQ_SUPER; sb++) {
        float scale[NB_NF4_DQ_NESTED];
        nb_block_nf4_dq *blk = &out[sb];
        for (int j = 0; j < NB_NF4_DQ_NESTED; j++) {
            int64_t e0 = sb * NB_NF4_DQ_SUPER + (int64_t)j * NB_NF4_BLOCK;
            const float *x = src + e0;
            const float *w = imp ? imp + e0 % n_per_row : NULL;
            scale[j] = nf4_pick_scale(thr, x, w, NB_NF4_BLOCK);
            nf4_encode(thr, x, NB_NF4_BLOCK / 2, scale[j], blk->qs + j * (NB_NF4_BLOCK / 2));
        }
        blk->offset = offset;
        blk->absmax2 = dq_encode(code, scale, NB_NF4_DQ_NESTED, offset, blk->qabsmax);
    }
    return (size_t)(total / NB_NF4_DQ_SUPER) * sizeof(nb_block_nf4_dq);
}

/* GPTQ set-code hook (nb_set_code_fn): element 2i in the high nibble of qs[i]. */
void nb_set_code_nf4(void *b, int p, int lv) { nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_nf4, qs) + p / 2, p % 2 == 0, lv); }
