/* engine/sample.c — greedy / top-k sampling (contract in sample.h). */
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

nb_status nb_sampler_init(nb_sampler *s, float temp, int top_k, uint64_t seed, nb_ctx *ctx) {
    memset(s, 0, sizeof *s);
    NB_RETURN_IF(ctx, !isfinite(temp) || temp < 0, NB_ERR_INVALID, "temperature %g must be >= 0", (double)temp);
    NB_RETURN_IF(ctx, top_k < 0, NB_ERR_INVALID, "top-k %d must be >= 0", top_k);
    s->temp = temp;
    s->top_k = top_k;
    s->rng = seed;
    return NB_OK;
}

void nb_sampler_free(nb_sampler *s) {
    if (!s) return;
    free(s->idx);
    free(s->val);
    s->idx = NULL;
    s->val = NULL;
    s->cap = 0;
}

double nb_sampler_uniform(nb_sampler *s) {
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* "a ranks before b": higher logit, then lower id. */
static bool before(float va, int32_t ia, float vb, int32_t ib) { return va > vb || (va == vb && ia < ib); }

/* Min-heap on rank (root = the candidate that ranks last). */
static void sift_down(float *v, int32_t *id, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && before(v[m], id[m], v[l], id[l])) m = l;
        if (r < n && before(v[m], id[m], v[r], id[r])) m = r;
        if (m == i) return;
        float tv = v[i]; v[i] = v[m]; v[m] = tv;
        int32_t ti = id[i]; id[i] = id[m]; id[m] = ti;
        i = m;
    }
}

int32_t nb_sample(nb_sampler *s, const float *logits, int n_vocab) {
    if (s->temp == 0.0f || s->top_k == 1) {
        int32_t best = 0;
        for (int i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    int k = s->top_k > 0 && s->top_k < n_vocab ? s->top_k : n_vocab;
    if (k > s->cap) {
        int32_t *ni = nb_realloc(NULL, s->idx, (size_t)k * sizeof *ni, "sample");
        if (!ni) return -1;
        s->idx = ni;
        float *nv = nb_realloc(NULL, s->val, (size_t)k * sizeof *nv, "sample");
        if (!nv) return -1;
        s->val = nv;
        s->cap = k;
    }
    float *v = s->val;
    int32_t *id = s->idx;
    for (int i = 0; i < k; i++) { v[i] = logits[i]; id[i] = i; }
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(v, id, k, i);
    for (int i = k; i < n_vocab; i++) {
        if (before(logits[i], i, v[0], id[0])) {
            v[0] = logits[i];
            id[0] = i;
            sift_down(v, id, k, 0);
        }
    }
    /* Heap order is fixed by the input, so the draw below is reproducible;
     * the maximum sets the softmax offset. */
    float mx = v[0];
    for (int i = 1; i < k; i++)
        if (v[i] > mx) mx = v[i];
    double sum = 0;
    for (int i = 0; i < k; i++) sum += exp(((double)v[i] - mx) / s->temp);
    double u = nb_sampler_uniform(s) * sum, c = 0;
    int32_t pick = -1;
    /* Heap-sort: popping the worst candidate to the end each time leaves the
     * array sorted best-first, and the draw walks it in that order. */
    for (int n = k; n > 0; n--) {
        float tv = v[0]; v[0] = v[n - 1]; v[n - 1] = tv;
        int32_t ti = id[0]; id[0] = id[n - 1]; id[n - 1] = ti;
        sift_down(v, id, n - 1, 0);
    }
    for (int i = 0; i < k; i++) {
        c += exp(((double)v[i] - mx) / s->temp);
        if (u < c) { pick = id[i]; break; }
    }
    if (pick < 0) pick = id[k - 1];
    return pick;
}
