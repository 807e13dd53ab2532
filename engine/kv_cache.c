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
 */
#include "engine/engine_impl.h"

#include "core/fp.h"
#include "quant/ggml_quants.h"

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
    double sum = 0;
    for (int p = p0; p <= p1; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += sc[p];
    }
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
