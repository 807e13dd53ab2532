/* engine/kv_cache.c — the KV cache's element types and the attention of one
 * query row over it.
 *
 * Each type follows the arithmetic of the llama.cpp CPU path that uses it
 * (engine.h), so that `--kv-type` measures what llama.cpp's cache setting
 * does to a model:
 *   F16   non-flash attention (llama.cpp's default): KQ = mul_mat(K f16, q)
 *         converts q to F16 (the vec_dot type of F16), softmax in F32, then
 *         KQV = mul_mat(V f16, KQ) converts the weights to F16; products of
 *         two F16 values are exact in F32, sums are F32.
 *   Q8_0  flash attention (a quantized V cache needs it): q is quantized to
 *         Q8_0 (K's vec_dot type) and each q.k is the integer dot of the two
 *         blocks times both F16 scales; V rows are dequantized and summed in
 *         F32 with F32 weights.
 * The softmax is the same two-pass one for every type (max, then exp and a
 * double sum); rows are summed in position order, so results do not depend
 * on threads.
 *
 * nb_cache_attend is the one-query path (the reference); the engine runs
 * nb_cache_attend_tile, which gives every query the same bits while reading
 * each cache row once per tile of queries, through the per-ISA row kernels of
 * kernels/cpu/attn.h (same summation order as dot8 / dot_q8_0 below).
 */
#include "engine/engine_impl.h"

#include "core/expf.h"
#include "core/fp.h"
#include "kernels/cpu/attn.h"
#include "quant/ggml_quants.h"

#include <assert.h>
#include <math.h>
#include <string.h>

static const char *const kv_names[] = {"f32", "f16", "q8_0"};

bool nb_cache_type_from_name(const char *name, nb_cache_type *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, kv_names[i]) == 0) {
            *out = (nb_cache_type)i;
            return true;
        }
    return false;
}

const char *nb_cache_type_name(nb_cache_type t) { return (unsigned)t < 3 ? kv_names[t] : "?"; }

size_t nb_cache_row_bytes(nb_cache_type t, int hd) {
    switch (t) {
    case NB_CACHE_F16: return (size_t)hd * 2;
    case NB_CACHE_Q8_0: return (size_t)hd / NB_QK8_0 * sizeof(nb_block_q8_0);
    default: return (size_t)hd * sizeof(float);
    }
}

void nb_cache_store(nb_cache_type t, const float *src, int hd, void *dst) {
    switch (t) {
    case NB_CACHE_F16: nb_f32_to_f16_n(src, dst, (size_t)hd); break;
    case NB_CACHE_Q8_0: nb_quantize_q8_0(src, dst, 1, hd, NULL); break;
    default: memcpy(dst, src, (size_t)hd * sizeof(float)); break;
    }
}

/* 8 partial sums in a fixed order (as the engine's other float dots). */
static float dot8(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

/* ggml's vec_dot_q8_0_q8_0: per block the exact integer dot times d_a * d_b. */
static float dot_q8_0(const nb_block_q8_0 *a, const nb_block_q8_0 *b, int nb) {
    float s = 0.f;
    for (int i = 0; i < nb; i++) {
        int32_t is = 0;
        for (int j = 0; j < NB_QK8_0; j++) is += a[i].qs[j] * b[i].qs[j];
        s += (float)is * (nb_f16_to_f32(a[i].d) * nb_f16_to_f32(b[i].d));
    }
    return s;
}

void nb_cache_attend(nb_cache_type t, const float *q, const unsigned char *K, const unsigned char *V, size_t kv_row,
                     int p0, int p1, int hd, float *sc, float *tmp, float *out) {
    float *qr = tmp, *row = tmp + hd, *row2 = tmp + 2 * (size_t)hd;
    nb_block_q8_0 *qb = (nb_block_q8_0 *)row2; /* hd/32 blocks fit in hd floats */
    if (t == NB_CACHE_F16)
        for (int d = 0; d < hd; d++) qr[d] = nb_f16_to_f32(nb_f32_to_f16(q[d]));
    else if (t == NB_CACHE_Q8_0)
        nb_quantize_q8_0(q, qb, 1, hd, NULL);
    float mx = -INFINITY;
    for (int p = p0; p <= p1; p++) {
        const unsigned char *k = K + (size_t)p * kv_row;
        if (t == NB_CACHE_F16) {
            nb_f16_to_f32_n((const uint16_t *)k, row, (size_t)hd);
            sc[p] = dot8(qr, row, hd);
        } else if (t == NB_CACHE_Q8_0) {
            sc[p] = dot_q8_0(qb, (const nb_block_q8_0 *)k, hd / NB_QK8_0);
        } else {
            sc[p] = dot8(q, (const float *)k, hd);
        }
        if (sc[p] > mx) mx = sc[p];
    }
    nb_expf_shift_n(sc + p0, mx, sc + p0, (size_t)(p1 - p0 + 1));
    double sum = 0;
    for (int p = p0; p <= p1; p++) sum += sc[p];
    const float inv = (float)(1.0 / sum);
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int p = p0; p <= p1; p++) {
        float w = sc[p] * inv;
        const unsigned char *v = V + (size_t)p * kv_row;
        const float *vr = (const float *)v;
        if (t == NB_CACHE_F16) {
            w = nb_f16_to_f32(nb_f32_to_f16(w));
            nb_f16_to_f32_n((const uint16_t *)v, row, (size_t)hd);
            vr = row;
        } else if (t == NB_CACHE_Q8_0) {
            nb_dequant_q8_0(v, row, hd);
            vr = row;
        }
        for (int d = 0; d < hd; d++) out[d] += w * vr[d];
    }
}

/* The run of cache rows from *p on that the same queries [ia, ib) see (the
 * queries that see row p are contiguous, as p0[] and p1[] grow with i): moves
 * *pp past rows no query sees, sets the run's last row *pe; false past the
 * tile's last row. */
static bool next_run(int nq, const int *p0, const int *p1, int *pp, int *pe, int *ia, int *ib) {
    int p = *pp;
    int a = 0;
    while (a < nq && p1[a] < p) a++;
    if (a == nq) return false;
    if (p < p0[a]) p = p0[a]; /* a gap between windows */
    int b = a;
    while (b < nq && p0[b] <= p) b++;
    int e = p1[a]; /* query a drops out after its last row */
    if (b < nq && p0[b] - 1 < e) e = p0[b] - 1; /* query b joins */
    *pp = p, *ia = a, *ib = b, *pe = e;
    return true;
}

void nb_cache_attend_tile(nb_cache_type t, int nq, const float *const *q, const int *p0, const int *p1,
                          const unsigned char *K, const unsigned char *V, size_t kv_row, int hd, float *sc,
                          size_t ld_sc, float *tmp, float *const *out) {
    assert(nq >= 1 && nq <= NB_CACHE_TILE_Q);
    const nb_type et = t == NB_CACHE_F16 ? NB_TYPE_F16 : t == NB_CACHE_Q8_0 ? NB_TYPE_Q8_0 : NB_TYPE_F32;
    nb_attn_kernels kn;
    const bool have = nb_attn_kernels_best(et, &kn);
    assert(have); /* the generic table has all three */
    (void)have;
    /* the queries as the type's dot sees them, then the output rows */
    float *acc = tmp + (size_t)nq * (size_t)hd;
    const size_t ldq = t == NB_CACHE_Q8_0 ? (size_t)hd / NB_QK8_0 * sizeof(nb_block_q8_0) : (size_t)hd * sizeof(float);
    unsigned char *qp = (unsigned char *)tmp;
    for (int i = 0; i < nq; i++) {
        assert(p0[i] <= p1[i] && (i == 0 || (p0[i - 1] <= p0[i] && p1[i - 1] <= p1[i])));
        unsigned char *qi = qp + (size_t)i * ldq; /* Q8_0: blocks of 34 bytes, 2-byte aligned */
        if (t == NB_CACHE_F16) {
            memcpy(qi, q[i], (size_t)hd * sizeof(float));
            nb_f16_round_n((float *)qi, (size_t)hd);
        } else if (t == NB_CACHE_Q8_0)
            nb_quantize_q8_0(q[i], qi, 1, hd, NULL);
        else
            memcpy(qi, q[i], (size_t)hd * sizeof(float));
    }
    /* runs of rows seen by the same queries [ia, ib) (p0 and p1 grow with i) */
    for (int p = p0[0], pe, ia, ib; next_run(nq, p0, p1, &p, &pe, &ia, &ib); p = pe + 1)
        kn.qk(hd, K + (size_t)p * kv_row, kv_row, pe - p + 1, qp + (size_t)ia * ldq, ldq, ib - ia,
              sc + (size_t)ia * ld_sc + p, (int64_t)ld_sc);
    for (int i = 0; i < nq; i++) {
        float *s = sc + (size_t)i * ld_sc;
        const size_t np = (size_t)(p1[i] - p0[i] + 1);
        /* expf(s - max) in bulk: nb_expf gives libm's bits (core/expf.h) */
        nb_expf_shift_n(s + p0[i], nb_max_n(s + p0[i], np), s + p0[i], np);
        double sum = 0;
        for (int p = p0[i]; p <= p1[i]; p++) sum += s[p];
        const float inv = (float)(1.0 / sum);
        for (int p = p0[i]; p <= p1[i]; p++) s[p] = s[p] * inv;
        if (t == NB_CACHE_F16) nb_f16_round_n(s + p0[i], (size_t)(p1[i] - p0[i] + 1));
    }
    memset(acc, 0, (size_t)nq * (size_t)hd * sizeof *acc);
    for (int p = p0[0], pe, ia, ib; next_run(nq, p0, p1, &p, &pe, &ia, &ib); p = pe + 1)
        kn.wv(hd, V + (size_t)p * kv_row, kv_row, pe - p + 1, sc + (size_t)ia * ld_sc + p, (int64_t)ld_sc, ib - ia,
              acc + (size_t)ia * (size_t)hd, hd);
    for (int i = 0; i < nq; i++) memcpy(out[i], acc + (size_t)i * (size_t)hd, (size_t)hd * sizeof(float));
}
