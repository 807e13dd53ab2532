/* quant/q_kquants.c — ggml's k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K).
 *
 * Super-blocks of 256 elements split into sub-blocks of 16 or 32, each with a
 * scale (and for Q2_K/Q4_K/Q5_K a min) that is itself quantized against one
 * fp16 super-scale. Quantizers reproduce ggml-quants.c bit for bit:
 *   imp == NULL  -> quantize_row_<t>_ref   (what llama-quantize writes without imatrix)
 *   imp != NULL  -> quantize_row_<t>_impl  (weights imp[i] * sqrt(sigma2 + x[i]^2))
 * Every float expression below keeps ggml's operand order; do not "simplify"
 * (a*b*c is (a*b)*c; 1/iscale is not the same bits as max/nmax).
 * Also holds the shared scale-search helpers declared in ggml_quants_impl.h.
 */
#include "quant/codes_impl.h"
#include "quant/ggml_quants_impl.h"

#include <math.h>
#include <string.h>

#define QK_K NB_QK_K

/* ---------------------------------------------------------------- helpers */

float nb_gq_make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < NB_GQ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nb_gq_nearest_int(iscale * x[i]);
        l = nb_gq_max(-nmax, nb_gq_min(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nb_gq_nearest_int(iscale * x[i]);
            l = nb_gq_max(-nmax, nb_gq_min(nmax - 1, l));
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nb_gq_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + nb_gq_max(-nmax, nb_gq_min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_q3_quants with do_rmse = true (the only use: Q3_K reference). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < NB_GQ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nb_gq_nearest_int(iscale * x[i]);
        l = nb_gq_max(-nmax, nb_gq_min(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nb_gq_nearest_int(x[i] * sl2 / slx);
                new_l = nb_gq_max(-nmax, nb_gq_min(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ggml's make_qkx2_quants (reference path of Q2_K, Q4_K, Q5_K). */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nb_gq_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)nb_gq_max(0, nb_gq_min(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nb_gq_nearest_int(iscale * (x[i] - min));
            l = nb_gq_max(0, nb_gq_min(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

float nb_gq_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                             float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                             bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights ? weights[0] : x[0] * x[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights ? weights[i] : x[i] * x[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = nb_gq_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)nb_gq_max(0, nb_gq_min(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        float w = weights ? weights[i] : x[i] * x[i];
        best_mad += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            /* v may be inf/nan/out of range when min sits near max: clamp first */
            const float v = iscale * (x[i] - min);
            const int l = v > 0 ? nb_gq_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
            Laux[i] = (uint8_t)l;
            float w = weights ? weights[i] : x[i] * x[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                float w = weights ? weights[i] : x[i] * x[i];
                mad += w * diff;
            }
            if (mad < best_mad) {
                memcpy(L, Laux, (size_t)n);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml's make_qp_quants: non-negative codes in [0, nmax] for a set of
 * (sub-block) scales, weighted by quant_weights; returns the super-scale.
 * Codes are stored as uint8_t with C's modular conversion, as in ggml. */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < NB_GQ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)nb_gq_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * (float)L[i];
        float w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = nb_gq_nearest_int(iscale_is * x[i]);
            l = nb_gq_min(nmax, l);
            float diff = x[i] - scale_is * (float)l;
            float w = quant_weights[i];
            mse += w * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nb_gq_nearest_int(iscale * x[i]);
        l = nb_gq_min(nmax, l);
        L[i] = (uint8_t)l;
        float w = quant_weights[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = quant_weights[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = nb_gq_nearest_int(x[i] * sl2 / slx);
                new_l = nb_gq_min(nmax, new_l);
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* 6-bit scale/min pair j (0..7) of a Q4_K/Q5_K super-block. */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Pack 8 (scale, min) 6-bit pairs into Q4_K/Q5_K's 12 bytes (ggml's layout). */
static void pack_scale_min_k4(uint8_t *scales, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] = (uint8_t)(scales[j - 4] | ((ls[j] >> 4) << 6));
            scales[j - 0] = (uint8_t)(scales[j - 0] | ((lm[j] >> 4) << 6));
        }
    }
}

/* Pack 256 2-bit codes: byte l of each 32-byte group holds elements l, l+32, l+64, l+96. */
static void pack_2bit(uint8_t *qs, const uint8_t *L) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

static size_t row_blocks(int64_t n_per_row) {
    assert(n_per_row % QK_K == 0);
    return (size_t)(n_per_row / QK_K);
}

/* ---------------------------------------------------------------- Q2_K */

static void q2_k_requant_pack(const float *x, nb_block_q2_K *y, uint8_t *L) {
    const float dall = nb_gq_h2f(y->d), mall = nb_gq_h2f(y->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * (float)(y->scales[j] & 0xF);
        if (!(d != 0)) continue;
        const float dm = mall * (float)(y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = nb_gq_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)nb_gq_max(0, nb_gq_min(3, l));
        }
    }
    pack_2bit(y->qs, L);
}

static void q2_k_ref_block(const float *x, nb_block_q2_K *y) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = (uint8_t)nb_gq_nearest_int(iscale * scales[j]);
        y->d = nb_gq_f2h(max_scale / q4scale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = nb_gq_f2h(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j) {
            int l = nb_gq_nearest_int(iscale * mins[j]);
            y->scales[j] = (uint8_t)(y->scales[j] | ((unsigned)l << 4));
        }
        y->dmin = nb_gq_f2h(max_min / q4scale);
    } else {
        y->dmin = nb_gq_f2h(0.f);
    }
    q2_k_requant_pack(x, y, L);
}

static void q2_k_impl_block(const float *x, nb_block_q2_K *y, const float *qw_block) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
    memset(sw, 0, sizeof sw);
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        const float *qw = qw_block + 16 * j;
        for (int l = 0; l < 16; ++l) weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < QK_K / 16; ++l) sw[j] += weight[l];
        scales[j] = nb_gq_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    float dm = make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    y->d = nb_gq_f2h(dm);
    y->dmin = nb_gq_f2h(mm);
    for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    q2_k_requant_pack(x, y, L);
}

size_t nb_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q2_K *y = dst;
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += QK_K) {
            if (imp) q2_k_impl_block(src, y, imp + QK_K * i);
            else q2_k_ref_block(src, y);
        }
    return (size_t)nrows * nb * sizeof(nb_block_q2_K);
}

void nb_dequant_q2_k(const void *src, float *y, int64_t n) {
    const nb_block_q2_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = nb_gq_h2f(x[i].d), min = nb_gq_h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int k = 0; k < QK_K; k += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                for (int h = 0; h < 2; ++h) {
                    uint8_t sc = x[i].scales[is++];
                    float dl = d * (float)(sc & 0xF), ml = min * (float)(sc >> 4);
                    for (int l = 0; l < 16; ++l) *y++ = dl * (float)((q[l + 16 * h] >> shift) & 3) - ml;
                }
                shift += 2;
            }
            q += 32;
        }
    }
}

/* ---------------------------------------------------------------- Q3_K */

/* Shared tail of both Q3_K paths: pack the 16 six-bit scale codes ls[j] (0..63),
 * re-quantize against the stored scales, split codes into hmask + 2-bit qs. */
static void q3_k_finish(const float *x, nb_block_q3_K *y, const int8_t *ls, int8_t *L) {
    memset(y->scales, 0, 12);
    for (int j = 0; j < QK_K / 16; ++j) {
        int l = ls[j];
        if (j < 8) y->scales[j] = (uint8_t)(l & 0xF);
        else y->scales[j - 8] = (uint8_t)(y->scales[j - 8] | ((l & 0xF) << 4));
        l >>= 4;
        y->scales[j % 4 + 8] = (uint8_t)(y->scales[j % 4 + 8] | (l << (2 * (j / 4))));
    }
    const float dall = nb_gq_h2f(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        int sc = j < 8 ? y->scales[j] & 0xF : y->scales[j - 8] >> 4;
        sc = (sc | (((y->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        float d = dall * (float)sc;
        if (!(d != 0)) continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = nb_gq_nearest_int(x[16 * j + ii] / d);
            l = nb_gq_max(-4, nb_gq_min(3, l));
            L[16 * j + ii] = (int8_t)(l + 4);
        }
    }
    memset(y->hmask, 0, QK_K / 8);
    /* high bit of the first 32 codes -> bit 0 of hmask[0..31], next 32 -> bit 1, ... */
    int m = 0;
    uint8_t hm = 1;
    uint8_t U[QK_K];
    for (int j = 0; j < QK_K; ++j) {
        int l = L[j];
        if (l > 3) {
            y->hmask[m] |= hm;
            l -= 4;
        }
        U[j] = (uint8_t)l;
        if (++m == QK_K / 8) {
            m = 0;
            hm = (uint8_t)(hm << 1);
        }
    }
    pack_2bit(y->qs, U);
}

static void q3_k_ref_block(const float *x, nb_block_q3_K *y) {
    int8_t L[QK_K], ls[QK_K / 16];
    float scales[QK_K / 16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale != 0) {
        float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            /* ggml stores nearest_int into an int8_t before clamping */
            int8_t l = (int8_t)nb_gq_nearest_int(iscale * scales[j]);
            ls[j] = (int8_t)(nb_gq_max(-32, nb_gq_min(31, l)) + 32);
        }
        y->d = nb_gq_f2h(1 / iscale);
    } else {
        memset(ls, 0, sizeof ls);
        y->d = nb_gq_f2h(0.f);
    }
    q3_k_finish(x, y, ls, L);
}

static void q3_k_impl_block(const float *x, nb_block_q3_K *y, const float *qw_block) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        const float *qw = qw_block + 16 * j;
        for (int l = 0; l < 16; ++l) weight[l] = qw[l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = nb_gq_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    float d_block = nb_gq_make_qx_quants(QK_K / 16, 32, scales, Ls, sw);
    y->d = nb_gq_f2h(d_block);
    q3_k_finish(x, y, Ls, L);
}

size_t nb_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q3_K *y = dst;
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += QK_K) {
            if (imp) q3_k_impl_block(src, y, imp + QK_K * i);
            else q3_k_ref_block(src, y);
        }
    return (size_t)nrows * nb * sizeof(nb_block_q3_K);
}

void nb_dequant_q3_k(const void *src, float *y, int64_t n) {
    const nb_block_q3_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d_all = nb_gq_h2f(x[i].d);
        int8_t scales[16];
        for (int j = 0; j < 16; ++j) {
            int lo = j < 8 ? x[i].scales[j] & 0xF : x[i].scales[j - 8] >> 4;
            int hi = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            scales[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        uint8_t m = 1;
        int is = 0;
        for (int k = 0; k < QK_K; k += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                for (int h = 0; h < 2; ++h) {
                    float dl = d_all * (float)scales[is++];
                    for (int l = 0; l < 16; ++l) {
                        int v = ((q[l + 16 * h] >> shift) & 3) - ((hm[l + 16 * h] & m) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
                shift += 2;
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

/* ---------------------------------------------------------------- Q4_K / Q5_K */

/* Reference-path scale search shared by Q4_K (nmax 15) and Q5_K (nmax 31):
 * fills L with codes, packs the 6-bit scale/min codes into y's scales, d, dmin. */
static void k45_ref_scales(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L,
                           uint16_t *yd, uint16_t *ydmin, uint8_t *yscales) {
    uint8_t Laux[32], ls[QK_K / 32], lm[QK_K / 32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t a = (uint8_t)nb_gq_nearest_int(inv_scale * scales[j]);
        uint8_t b = (uint8_t)nb_gq_nearest_int(inv_min * mins[j]);
        ls[j] = a < 63 ? a : 63;
        lm[j] = b < 63 ? b : 63;
    }
    pack_scale_min_k4(yscales, ls, lm);
    *yd = nb_gq_f2h(max_scale / 63.f);
    *ydmin = nb_gq_f2h(max_min / 63.f);
}

/* imatrix-path scale search shared by Q4_K and Q5_K (ggml's *_impl). */
static void k45_impl_scales(const float *x, int nmax, const float *qw_block, uint8_t *L, uint16_t *yd,
                            uint16_t *ydmin, uint8_t *yscales) {
    uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        const float *qw = qw_block + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = nb_gq_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
    float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; ++j) { /* Q5_K clamps here, Q4_K does not; codes are <= 63 anyway */
        if (nmax == 31) {
            if (Ls[j] > 63) Ls[j] = 63;
            if (Lm[j] > 63) Lm[j] = 63;
        }
    }
    pack_scale_min_k4(yscales, Ls, Lm);
    *yd = nb_gq_f2h(d_block);
    *ydmin = nb_gq_f2h(m_block);
}

/* Re-quantize every element against the stored (rounded) scales and mins. */
static void k45_requant(const float *x, int nmax, uint16_t yd, uint16_t ydmin, const uint8_t *yscales, uint8_t *L) {
    const float dall = nb_gq_h2f(yd), mall = nb_gq_h2f(ydmin);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, yscales, &sc, &m);
        const float d = dall * (float)sc;
        if (!(d != 0)) continue;
        const float dm = mall * (float)m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = nb_gq_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)nb_gq_max(0, nb_gq_min(nmax, l));
        }
    }
}

size_t nb_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q4_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += QK_K) {
            if (imp) k45_impl_scales(src, 15, imp + QK_K * i, L, &y->d, &y->dmin, y->scales);
            else k45_ref_scales(src, 15, -1.f, 0.1f, 20, L, &y->d, &y->dmin, y->scales);
            k45_requant(src, 15, y->d, y->dmin, y->scales, L);
            uint8_t *q = y->qs;
            for (int j = 0; j < QK_K; j += 64, q += 32)
                for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        }
    return (size_t)nrows * nb * sizeof(nb_block_q4_K);
}

void nb_dequant_q4_k(const void *src, float *y, int64_t n) {
    const nb_block_q4_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = nb_gq_h2f(x[i].d), min = nb_gq_h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

size_t nb_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q5_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += QK_K) {
            if (imp) k45_impl_scales(src, 31, imp + QK_K * i, L, &y->d, &y->dmin, y->scales);
            else k45_ref_scales(src, 31, -0.5f, 0.1f, 15, L, &y->d, &y->dmin, y->scales);
            k45_requant(src, 31, y->d, y->dmin, y->scales, L);
            uint8_t *qh = y->qh, *ql = y->qs;
            memset(qh, 0, QK_K / 8);
            uint8_t m1 = 1, m2 = 2;
            for (int k = 0; k < QK_K; k += 64) {
                for (int j = 0; j < 32; ++j) {
                    int l1 = L[k + j], l2 = L[k + j + 32];
                    if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
                    if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
                    ql[j] = (uint8_t)(l1 | (l2 << 4));
                }
                m1 = (uint8_t)(m1 << 2);
                m2 = (uint8_t)(m2 << 2);
                ql += 32;
            }
        }
    return (size_t)nrows * nb * sizeof(nb_block_q5_K);
}

void nb_dequant_q5_k(const void *src, float *y, int64_t n) {
    const nb_block_q5_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = nb_gq_h2f(x[i].d), min = nb_gq_h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

/* ---------------------------------------------------------------- Q6_K */

static void q6_k_block(const float *x, nb_block_q6_K *y, const float *qw_block) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        /* the imatrix path passes the raw importances as weights (no sigma2 term) */
        const float scale = nb_gq_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw_block ? qw_block + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < NB_GQ_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = nb_gq_f2h(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib] = (int8_t)nb_gq_min(127, nb_gq_nearest_int(iscale * scales[ib]));
    const float dall = nb_gq_h2f(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * (float)y->scales[j];
        if (!(d != 0)) continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = nb_gq_nearest_int(x[16 * j + ii] / d);
            l = nb_gq_max(-32, nb_gq_min(31, l));
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
            const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                              ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

size_t nb_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    const size_t nb = row_blocks(n_per_row);
    nb_block_q6_K *y = dst;
    for (int64_t r = 0; r < nrows; ++r)
        for (size_t i = 0; i < nb; ++i, ++y, src += QK_K) q6_k_block(src, y, imp ? imp + QK_K * i : NULL);
    return (size_t)nrows * nb * sizeof(nb_block_q6_K);
}

void nb_dequant_q6_k(const void *src, float *y, int64_t n) {
    const nb_block_q6_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = nb_gq_h2f(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int k = 0; k < QK_K; k += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* ---------------------------------------------------------------- Q8_K */

size_t nb_quantize_q8_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imp) {
    (void)imp; /* ggml has no weighted Q8_K */
    const size_t nb = row_blocks(n_per_row);
    nb_block_q8_K *y = dst;
    const float *x = src;
    for (size_t i = 0; i < (size_t)nrows * nb; ++i, ++y, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            float ax = fabsf(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (!(amax != 0)) {
            memset(y, 0, sizeof *y); /* ggml leaves bsums unwritten here; zero is their true value */
            continue;
        }
        const float iscale = -127.f / max; /* ggml: -127 (not -128) to suit IQ2_XXS dot products */
        for (int j = 0; j < QK_K; ++j) y->qs[j] = (int8_t)nb_gq_min(127, nb_gq_nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y->qs[j * 16 + ii];
            y->bsums[j] = (int16_t)sum;
        }
        y->d = 1 / iscale;
    }
    return (size_t)nrows * nb * sizeof(nb_block_q8_K);
}

void nb_dequant_q8_k(const void *src, float *y, int64_t n) {
    const nb_block_q8_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; ++j) *y++ = x[i].d * (float)x[i].qs[j];
}

/* ---- GPTQ set-code hooks (nb_set_code_fn): code `lv` of element p ------------------------- */

/* Q2_K/Q3_K 2-bit codes: byte (p/128)*32 + p%32, shift 2*((p%128)/32) */
static void set_2bit(uint8_t *qs, int p, int v) {
    int idx = (p / 128) * 32 + p % 32, sh = 2 * ((p % 128) / 32);
    qs[idx] = (uint8_t)((qs[idx] & ~(3 << sh)) | (v << sh));
}
void nb_set_code_q2_k(void *b, int p, int lv) { set_2bit(NB_BLOCK_FIELD(b, nb_block_q2_K, qs), p, lv); }
/* Q3_K: code c = low2 | hbit << 2 (value c - 4); hmask[p % 32] bit (p/128)*4 + (p%128)/32 */
void nb_set_code_q3_k(void *b, int p, int lv) {
    set_2bit(NB_BLOCK_FIELD(b, nb_block_q3_K, qs), p, lv & 3);
    nb_set_bit(NB_BLOCK_FIELD(b, nb_block_q3_K, hmask) + p % 32, (p / 128) * 4 + (p % 128) / 32, lv >> 2);
}
/* Q4_K/Q5_K: 64-element chunks, low nibble = first 32, high nibble = next 32 */
void nb_set_code_q4_k(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q4_K, qs) + 32 * (p / 64) + p % 32, p % 64 >= 32, lv);
}
void nb_set_code_q5_k(void *b, int p, int lv) {
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q5_K, qs) + 32 * (p / 64) + p % 32, p % 64 >= 32, lv & 15);
    nb_set_bit(NB_BLOCK_FIELD(b, nb_block_q5_K, qh) + p % 32, 2 * (p / 64) + (p % 64 >= 32), lv >> 4);
}
/* Q6_K: ql[128], qh[64]; per 128 half: quarter qn, lane l */
void nb_set_code_q6_k(void *b, int p, int lv) {
    int half = p / 128, r = p % 128, qn = r / 32, l = r % 32;
    nb_set_nibble(NB_BLOCK_FIELD(b, nb_block_q6_K, ql) + half * 64 + l + (qn & 1) * 32, qn >= 2, lv & 15);
    uint8_t *qh = NB_BLOCK_FIELD(b, nb_block_q6_K, qh) + half * 32 + l;
    *qh = (uint8_t)((*qh & ~(3 << (2 * qn))) | ((lv >> 4) << (2 * qn)));
}
