/* kernels/cpu/attn.c — the attention row kernels in portable C (the
 * canonical order of attn.h) and their selection. */
#include "kernels/cpu/attn.h"

#include "core/fp.h"
#include "kernels/cpu/kernels_impl.h"
#include "quant/ggml_quants.h"

/* Elements converted per step: a row is read once per tile in chunks of 8. */
enum { CH = 8 };

/* One row chunk as F32: F32 as is, F16 converted exactly. */
static void chunk_f32(const void *row, bool f16, int64_t d, int64_t n, float *dst) {
    if (f16) nb_f16_to_f32_n((const uint16_t *)row + d, dst, (size_t)n);
    else
        for (int64_t j = 0; j < n; j++) dst[j] = ((const float *)row)[d + j];
}

static void qk_float(bool f16, int64_t hd, const void *k, const void *q, size_t ldq, int64_t nq, float *s,
                     int64_t lds) {
    for (int64_t i = 0; i < nq; i++) {
        const float *qi = (const float *)((const char *)q + (size_t)i * ldq);
        float acc[CH] = {0}, kv[CH];
        int64_t d = 0;
        for (; d + CH <= hd; d += CH) {
            chunk_f32(k, f16, d, CH, kv);
            for (int j = 0; j < CH; j++) acc[j] += qi[d + j] * kv[j];
        }
        float r = nb_kern_acc_sum(acc);
        for (; d < hd; d++) {
            chunk_f32(k, f16, d, 1, kv);
            r += qi[d] * kv[0];
        }
        s[i * lds] = r;
    }
}

static void qk_f32(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                   float *s, int64_t lds) {
    for (int64_t p = 0; p < np; p++) qk_float(false, hd, (const char *)k + p * kv_row, q, ldq, nq, s + p, lds);
}

static void qk_f16(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                   float *s, int64_t lds) {
    for (int64_t p = 0; p < np; p++) qk_float(true, hd, (const char *)k + p * kv_row, q, ldq, nq, s + p, lds);
}

static void qk_q8_0_row(int64_t hd, const void *k, const void *q, size_t ldq, int64_t nq, float *s, int64_t lds) {
    const nb_block_q8_0 *kb = k;
    for (int64_t i = 0; i < nq; i++) {
        const nb_block_q8_0 *qb = (const nb_block_q8_0 *)((const char *)q + (size_t)i * ldq);
        float r = 0.f;
        for (int64_t b = 0; b < hd / NB_QK8_0; b++) {
            int32_t is = 0;
            for (int j = 0; j < NB_QK8_0; j++) is += qb[b].qs[j] * kb[b].qs[j];
            r += (float)is * (nb_f16_to_f32(qb[b].d) * nb_f16_to_f32(kb[b].d));
        }
        s[i * lds] = r;
    }
}

static void wv_float(bool f16, int64_t hd, const void *v, const float *w, int64_t ldw, int64_t nq, float *out,
                     int64_t ldo) {
    float vv[CH];
    for (int64_t d = 0; d < hd; d += CH) {
        const int64_t n = hd - d < CH ? hd - d : CH;
        chunk_f32(v, f16, d, n, vv);
        for (int64_t i = 0; i < nq; i++) {
            const float wi = w[i * ldw];
            float *o = out + i * ldo + d;
            for (int64_t j = 0; j < n; j++) o[j] += wi * vv[j];
        }
    }
}

static void wv_f32(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                   float *out, int64_t ldo) {
    for (int64_t p = 0; p < np; p++) wv_float(false, hd, (const char *)v + p * kv_row, w + p, ldw, nq, out, ldo);
}

static void wv_f16(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                   float *out, int64_t ldo) {
    for (int64_t p = 0; p < np; p++) wv_float(true, hd, (const char *)v + p * kv_row, w + p, ldw, nq, out, ldo);
}

static void wv_q8_0_row(int64_t hd, const void *v, const float *w, int64_t ldw, int64_t nq, float *out, int64_t ldo) {
    const nb_block_q8_0 *vb = v;
    float vv[NB_QK8_0];
    for (int64_t b = 0; b < hd / NB_QK8_0; b++) {
        const float d = nb_f16_to_f32(vb[b].d);
        for (int j = 0; j < NB_QK8_0; j++) vv[j] = (float)vb[b].qs[j] * d;
        for (int64_t i = 0; i < nq; i++) {
            const float wi = w[i * ldw];
            float *o = out + i * ldo + b * NB_QK8_0;
            for (int j = 0; j < NB_QK8_0; j++) o[j] += wi * vv[j];
        }
    }
}

static void qk_q8_0(int64_t hd, const void *k, size_t kv_row, int64_t np, const void *q, size_t ldq, int64_t nq,
                    float *s, int64_t lds) {
    for (int64_t p = 0; p < np; p++) qk_q8_0_row(hd, (const char *)k + p * kv_row, q, ldq, nq, s + p, lds);
}

static void wv_q8_0(int64_t hd, const void *v, size_t kv_row, int64_t np, const float *w, int64_t ldw, int64_t nq,
                    float *out, int64_t ldo) {
    for (int64_t p = 0; p < np; p++) wv_q8_0_row(hd, (const char *)v + p * kv_row, w + p, ldw, nq, out, ldo);
}

void nb_kern_fill_attn_generic(nb_kernels *k) {
    k->att_qk[NB_TYPE_F32] = qk_f32;
    k->att_qk[NB_TYPE_F16] = qk_f16;
    k->att_qk[NB_TYPE_Q8_0] = qk_q8_0;
    k->att_wv[NB_TYPE_F32] = wv_f32;
    k->att_wv[NB_TYPE_F16] = wv_f16;
    k->att_wv[NB_TYPE_Q8_0] = wv_q8_0;
}

static bool pick(const nb_kernels *k, nb_type t, nb_attn_kernels *out) {
    if (!k || t < 0 || t >= NB_TYPE_COUNT || !k->att_qk[t] || !k->att_wv[t]) return false;
    out->qk = k->att_qk[t];
    out->wv = k->att_wv[t];
    return true;
}

bool nb_attn_kernels_best(nb_type t, nb_attn_kernels *out) { return pick(nb_kernels_best(), t, out); }

bool nb_attn_kernels_isa(const char *isa, nb_type t, nb_attn_kernels *out) {
    return pick(nb_kernels_by_name(isa), t, out);
}
