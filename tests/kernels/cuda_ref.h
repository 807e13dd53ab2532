/* tests/kernels/cuda_ref.h — CPU references for the CUDA suites (test_cuda.c,
 * test_cuda_host.c): copies of the CPU engine's functions, which are static in
 * engine/forward.c and engine/forward_moe.c, and error measures.
 * "max rel" is max_i |a_i - b_i| / max_i |b_i| over a call's outputs. */
#ifndef NB_TESTS_KERNELS_CUDA_REF_H
#define NB_TESTS_KERNELS_CUDA_REF_H

#include "engine/engine_impl.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float *gauss(size_t n, uint64_t seed, float scale) {
    float *v = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(v);
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) v[i] = scale * nbt_rand_normal(&s);
    return v;
}

/* max |a - b| / max |b| */
static inline double max_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= num)) num = d; /* a NaN difference wins */
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

static inline void ref_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)(xr[i] * xr[i]);
        const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
        for (int i = 0; i < n; i++) o[i] = (xr[i] * scale) * w[i];
    }
}

static inline void ref_rope(float *v, int n, int n_h, int hd, int n_rot, bool neox, const float *cs) {
    const int half = n_rot / 2;
    for (int64_t th = 0; th < (int64_t)n * n_h; th++) {
        const int64_t t = th / n_h;
        float *x = v + th * hd;
        const float *c = cs + (size_t)t * half * 2;
        for (int i = 0; i < half; i++) {
            const float co = c[2 * i], si = c[2 * i + 1];
            const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float x0 = x[a], x1 = x[b];
            x[a] = x0 * co - x1 * si;
            x[b] = x0 * si + x1 * co;
        }
    }
}

static inline void ref_softmax(float *x, int64_t rows, int n) {
    for (int64_t r = 0; r < rows; r++) {
        float *p = x + r * n, mx = -INFINITY;
        for (int i = 0; i < n; i++) mx = p[i] > mx ? p[i] : mx;
        double sum = 0;
        for (int i = 0; i < n; i++) {
            p[i] = expf(p[i] - mx);
            sum += p[i];
        }
        const float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++) p[i] *= inv;
    }
}

static inline void ref_attention(const float *q, const float *kc, const float *vc, float *out, int n, int pos, int H,
                                 int Hkv, int hd, int n_ctx, float scale, int window) {
    const int G = H / Hkv;
    float *sc = malloc((size_t)n_ctx * sizeof(float));
    ck_assert_ptr_nonnull(sc);
    for (int64_t ht = 0; ht < (int64_t)n * H; ht++) {
        const int t = (int)(ht / H), h = (int)(ht % H), kvh = h / G;
        const float *qr = q + ((int64_t)t * H + h) * hd;
        const float *K = kc + (int64_t)kvh * n_ctx * hd, *V = vc + (int64_t)kvh * n_ctx * hd;
        const int p1 = pos + t, p0 = window > 0 && p1 - window + 1 > 0 ? p1 - window + 1 : 0;
        float mx = -INFINITY;
        for (int p = p0; p <= p1; p++) {
            float s = 0;
            for (int d = 0; d < hd; d++) s += qr[d] * K[(int64_t)p * hd + d];
            sc[p] = s * scale;
            if (sc[p] > mx) mx = sc[p];
        }
        double sum = 0;
        for (int p = p0; p <= p1; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        const float inv = (float)(1.0 / sum);
        float *o = out + ((int64_t)t * H + h) * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int p = p0; p <= p1; p++)
            for (int d = 0; d < hd; d++) o[d] += sc[p] * inv * V[(int64_t)p * hd + d];
    }
    free(sc);
}

/* The engine's own routing (engine/forward_moe.c), on a copy of the logits. */
static inline void ref_route(const float *logits, int X, int U, bool norm, float scale, int32_t *sel,
                             float *w) {
    float *probs = malloc((size_t)X * sizeof(float));
    ck_assert_ptr_nonnull(probs);
    nb_eng_route_token(logits, X, U, norm, scale, probs, sel, w);
    free(probs);
}

#endif
