/* engine/forward.c — the transformer graph for one sub-batch of tokens.
 *
 * Per layer (llama family; the gemma3 extras in brackets):
 *   xb  = RMSNorm(x) * attn_norm
 *   q,k,v = xb Wq (+bq), xb Wk (+bk), xb Wv (+bv)        batched over all tokens
 *   [qwen3, gemma3] q,k = RMSNorm per head * q_norm / k_norm
 *   q,k = RoPE(q,k, pos)   NORM layout (llama: GGUF q/k rows are permuted so
 *                          pairs are adjacent) or NEOX (qwen2/3, gemma3)
 *   K,V -> cache; att = softmax(scale * q.K^T, causal [+ sliding window]) V
 *   xb2 = att Wo (+bo)  [gemma3: RMSNorm * post_attention_norm]
 *   x  += xb2
 *   xb  = RMSNorm(x) * ffn_norm
 *   xb2 = FFN(xb): down(act(gate xb) * up xb), act = SiLU (GELU-tanh for gemma3),
 *         or the MoE FFN (forward_moe.c)   [gemma3: RMSNorm * post_ffw_norm]
 *   x  += xb2
 * then logits = (RMSNorm(x) * output_norm) W_out.
 *
 * Threads: matmuls run in nb_matmul (each output by one thread); the other
 * steps split rows or (head, token) pairs across OpenMP threads, and every
 * output value is computed by one thread in a fixed order, so results are
 * bit-identical at any thread count.
 */
#include "engine/engine_impl.h"

#include "core/expf.h"
#include "kernels/cpu/matmul.h"

#include <math.h>
#include <omp.h>
#include <string.h>

nb_status nb_eng_matmul(nb_engine *e, const nb_wmat *w, int expert, const float *x, int64_t n_tok, float *y,
                        nb_ctx *ctx) {
    if (e->hooks.on_matmul) e->hooks.on_matmul(e->hooks.user, w->name, expert, x, n_tok, w->n_in);
    const unsigned char *base = w->data;
    if (expert > 0) base += (uint64_t)expert * w->mat_bytes;
    if (e->precise) return nb_matmul_ref(w->type, base, w->n_out, w->n_in, x, n_tok, y, e->n_threads, ctx);
    if (w->packed)
        return nb_matmul_packed(w->type, (const unsigned char *)w->packed + (uint64_t)(expert > 0 ? expert : 0) *
                                                                                w->packed_mat_bytes,
                                w->n_out, w->n_in, x, n_tok, y, e->n_threads, ctx);
    return nb_matmul(w->type, base, w->n_out, w->n_in, x, n_tok, y, e->n_threads, ctx);
}

/* Element-wise steps below this many values run on one thread: a parallel
 * region costs more than it saves there, the more so on a loaded machine. */
#define PAR_MIN ((int64_t)1 << 18)
/* Attention below this many multiply-adds of q.K runs on one thread: the
 * matmuls' threshold (kernels/cpu/matmul.c), so that a generation step keeps
 * few parallel regions also at long contexts. */
#define ATT_PAR_MIN ((int64_t)1 << 22)

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for `rows` rows of n (in place allowed).
 * The sum of squares is accumulated in double, as ggml does. */
static void rmsnorm(float *out, const float *x, const float *w, int64_t rows, int n, float eps, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * n >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)(xr[i] * xr[i]);
        const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
        for (int i = 0; i < n; i++) o[i] = (xr[i] * scale) * w[i];
    }
}

void nb_eng_rmsnorm(float *out, const float *x, const float *w, int64_t rows, int n, float eps, int n_threads) {
    rmsnorm(out, x, w, rows, n, eps, n_threads);
}

static void add_bias(float *y, const float *b, int64_t rows, int n) {
    if (!b) return;
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) y[r * n + i] += b[i];
}


/* e^z for |z| <= 87 in +, -, *, / and integer bit moves only, so every
 * compiler and vector width gives the same bits (the GELU loop below
 * vectorises; libm's tanhf does not, and libms differ): z = n ln2 + r with
 * n = round(z / ln2) (the 1.5 * 2^23 trick, ties to even), ln2 split Cody-
 * Waite style so that n * 0.693359375 is exact, e^r by its degree-6 Taylor
 * polynomial on |r| <= ln2/2 (relative error < 2e-7), times 2^n made in the
 * exponent bits. */
static inline float exp_small(float z) {
    const float magic = 12582912.f; /* 1.5 * 2^23 */
    const float t = z * 1.44269504088896341f + magic;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const float n = t - magic;
    const float r = (z - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    /* tb's low 23 bits hold n + 2^22; 2^n has exponent field n + 127 */
    const uint32_t sb = (((tb & 0x7fffffu) - 0x400000u) + 127u) << 23;
    float s;
    memcpy(&s, &sb, sizeof s);
    return p * s;
}

/* x with its magnitude limited to the float whose bits are lim (an integer
 * min on the bits: floating-point compares would keep GCC from vectorising
 * the loop under -ftrapping-math); a NaN becomes +-lim, so callers keep x
 * itself in a factor that carries the NaN. */
static inline float clamp_abs_bits(float x, int32_t lim) {
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    int32_t a = (int32_t)(xb & 0x7fffffffu);
    a = a > lim ? lim : a;
    const uint32_t cb = (uint32_t)a | (xb & 0x80000000u);
    float c;
    memcpy(&c, &cb, sizeof c);
    return c;
}

/* SiLU: x / (1 + e^-x) with nb_expf (libm's expf bits, core/expf.h), the
 * exponentials in bulk. (exp_small instead gained ~1 % on SmolLM2's prompts
 * but moved its 128-token PPL against llama.cpp, tests/engine/test_llamacpp.c,
 * by 1.4 %: within that sample's noise but past the test's bound.) */
static void silu_glu(float *gate, const float *up, int64_t n) {
    enum { CH = 256 };
    float e[CH];
    for (int64_t i0 = 0; i0 < n; i0 += CH) {
        const int m = n - i0 < CH ? (int)(n - i0) : CH;
        for (int i = 0; i < m; i++) e[i] = -gate[i0 + i];
        nb_expf_shift_n(e, 0.f, e, (size_t)m); /* x - 0 is x, -0 and NaN included */
        for (int i = 0; i < m; i++) gate[i0 + i] = gate[i0 + i] / (1.0f + e[i]) * up[i0 + i];
    }
}

/* GELU, tanh form: 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)) with
 * u = sqrt(2/pi) x (1 + 0.044715 x^2); the second form has no cancellation
 * for negative x. u is taken of x limited to |x| <= 9.9 (|2u| <= 85, so e^-2u
 * stays a normal float; beyond it GELU is x or below 1e-35 in magnitude). */
static inline float gelu_tanh(float x) {
    const float c = 0.79788456080286535588f; /* sqrt(2/pi) */
    const float xc = clamp_abs_bits(x, 0x411e6666 /* 9.9 */);
    const float u = c * xc * (1.0f + 0.044715f * xc * xc);
    return x / (1.0f + exp_small(-2.f * u));
}

void nb_eng_glu(nb_act act, float *gate, const float *up, int64_t n) {
    if (act == NB_ACT_GELU_TANH)
        for (int64_t i = 0; i < n; i++) gate[i] = gelu_tanh(gate[i]) * up[i];
    else
        silu_glu(gate, up, n);
}

/* cos/sin of every rotary pair for token positions pos..pos+n-1 under rope r:
 * cs[(t * n_rot/2 + i) * 2 + {0,1}]. YaRN as ggml's rope_yarn: a ramp over
 * the correction dims mixes interpolated and extrapolated angles and the
 * magnitude gets 1 + 0.1 ln(1/scale). */
static void rope_table(const nb_rope *r, int n_rot, int pos, int n, double *cs) {
    const int half = n_rot / 2;
    for (int t = 0; t < n; t++) {
        const double p = (double)(pos + t);
        for (int i = 0; i < half; i++) {
            double extrap = p * r->inv_freq[i];
            double theta = r->freq_scale * extrap, mscale = r->attn_factor;
            if (r->ext_factor != 0) {
                double y = ((double)i - r->corr_lo) / fmax(0.001, r->corr_hi - r->corr_lo);
                double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r->ext_factor;
                theta = theta * (1.0 - ramp) + extrap * ramp;
                mscale *= 1.0 + 0.1 * log(1.0 / r->freq_scale);
            }
            cs[((size_t)t * half + i) * 2] = cos(theta) * mscale;
            cs[((size_t)t * half + i) * 2 + 1] = sin(theta) * mscale;
        }
    }
}

/* Rotate the first n_rot dims of each of n_h heads (hd wide) of n tokens. */
static void rope_apply(float *v, int n, int n_h, int hd, int n_rot, nb_rope_layout lay, const double *cs, int nt) {
    const int half = n_rot / 2;
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)n * n_h * n_rot >= PAR_MIN)
    for (int64_t th = 0; th < (int64_t)n * n_h; th++) {
        const int64_t t = th / n_h;
        float *x = v + th * hd;
        const double *c = cs + (size_t)t * half * 2;
        for (int i = 0; i < half; i++) {
            const float co = (float)c[2 * i], si = (float)c[2 * i + 1];
            const int a = lay == NB_ROPE_NORM ? 2 * i : i, b = lay == NB_ROPE_NORM ? 2 * i + 1 : i + half;
            const float x0 = x[a], x1 = x[b];
            x[a] = x0 * co - x1 * si;
            x[b] = x0 * si + x1 * co;
        }
    }
}

/* The cache rows token t of a batch at pos..pos+n-1 attends to: [*p0, *p1]. */
static void att_span(const nb_ehparams *hp, bool swa, int n, int pos, int t, int *p0, int *p1) {
    int b = pos + t;
    int a = swa && b - hp->n_swa + 1 > 0 ? b - hp->n_swa + 1 : 0;
    if (hp->bidir) { /* the whole batch, within n_swa / 2 either side on local layers */
        const int self = b, half = hp->n_swa / 2;
        a = swa && self - half > 0 ? self - half : 0;
        b = pos + n - 1;
        if (swa && self + half < b) b = self + half;
    }
    *p0 = a;
    *p1 = b;
}

/* Attention of n query tokens (positions pos..pos+n-1) against the cache of
 * layer L. Work items are tiles of up to NB_CACHE_TILE_Q queries of one KV
 * head: its query heads (GQA) times consecutive tokens, so each cache row is
 * read once per tile. Items are taken largest first (latest tokens: the most
 * rows under a causal mask) and each output is computed by one thread, so
 * results do not depend on the thread count. */
static void attention(nb_engine *e, int L, int n, int pos) {
    const nb_ehparams *hp = &e->hp;
    const int hd = hp->head_dim, H = hp->n_head, KVH = hp->n_head_kv, G = hp->n_head / hp->n_head_kv;
    const bool swa = e->layers[L].swa;
    const unsigned char *kc = e->k_cache[L], *vc = e->v_cache[L];
    const size_t head_bytes = (size_t)e->n_ctx * e->kv_row;
    const int gt = G < NB_CACHE_TILE_Q ? G : NB_CACHE_TILE_Q; /* query heads per tile */
    const int n_hc = (G + gt - 1) / gt, tt = NB_CACHE_TILE_Q / gt, n_tt = (n + tt - 1) / tt;
    const int64_t n_items = (int64_t)n_tt * KVH * n_hc;
    /* about the multiply-adds of q.K (as many again for att.V): a generation
     * step stays on one thread */
    const int64_t work = (int64_t)n * H * (pos + n) * hd;
#pragma omp parallel num_threads(e->n_threads) if (work >= ATT_PAR_MIN && n_items > 1)
    {
        const int th = omp_get_thread_num();
        float *sc = e->scores + (size_t)th * NB_CACHE_TILE_Q * (size_t)e->n_ctx;
        float *tmp = e->kv_tmp + (size_t)th * NB_CACHE_TILE_TMP(hd);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_items; it++) {
            const int tile = n_tt - 1 - (int)(it / ((int64_t)KVH * n_hc)), rest = (int)(it % ((int64_t)KVH * n_hc));
            const int kvh = rest / n_hc, h0 = kvh * G + (rest % n_hc) * gt;
            const int h1 = h0 + gt < (kvh + 1) * G ? h0 + gt : (kvh + 1) * G;
            const int t0 = tile * tt, t1 = t0 + tt < n ? t0 + tt : n;
            const float *q[NB_CACHE_TILE_Q];
            float *out[NB_CACHE_TILE_Q];
            int p0[NB_CACHE_TILE_Q], p1[NB_CACHE_TILE_Q], nq = 0;
            for (int t = t0; t < t1; t++) {
                int a, b;
                att_span(hp, swa, n, pos, t, &a, &b);
                for (int h = h0; h < h1; h++, nq++) {
                    q[nq] = e->q + ((int64_t)t * H + h) * hd;
                    out[nq] = e->att + ((int64_t)t * H + h) * hd;
                    p0[nq] = a;
                    p1[nq] = b;
                }
            }
            nb_cache_attend_tile(e->kv_type, nq, q, p0, p1, kc + (size_t)kvh * head_bytes,
                                 vc + (size_t)kvh * head_bytes, e->kv_row, hd, sc, (size_t)e->n_ctx, tmp, out);
        }
    }
}

static nb_status attn_block(nb_engine *e, int L, int n, int pos, nb_ctx *ctx) {
    const nb_ehparams *hp = &e->hp;
    const nb_layer *l = &e->layers[L];
    const int hd = hp->head_dim, H = hp->n_head, KVH = hp->n_head_kv, nt = e->n_threads;
    const int Q = H * hd, KV = KVH * hd;
    NB_TRY(nb_eng_matmul(e, &l->wq, -1, e->xb, n, e->q, ctx));
    NB_TRY(nb_eng_matmul(e, &l->wk, -1, e->xb, n, e->k, ctx));
    NB_TRY(nb_eng_matmul(e, &l->wv, -1, e->xb, n, e->v, ctx));
    add_bias(e->q, l->bq, n, Q);
    add_bias(e->k, l->bk, n, KV);
    add_bias(e->v, l->bv, n, KV);
    if (l->q_norm) rmsnorm(e->q, e->q, l->q_norm, (int64_t)n * H, hd, hp->rms_eps, nt);
    if (l->k_norm) rmsnorm(e->k, e->k, l->k_norm, (int64_t)n * KVH, hd, hp->rms_eps, nt);
    const double *cs = e->rope_cs + (l->rope == &e->rope_local ? (size_t)e->n_batch * (size_t)hp->n_rot : 0);
    rope_apply(e->q, n, H, hd, hp->n_rot, hp->rope_layout, cs, nt);
    rope_apply(e->k, n, KVH, hd, hp->n_rot, hp->rope_layout, cs, nt);
    for (int64_t i = 0; i < (int64_t)n * Q; i++) e->q[i] *= hp->attn_scale;
    /* cache: per kv head, positions contiguous */
    for (int t = 0; t < n; t++)
        for (int h = 0; h < KVH; h++) {
            const size_t off = ((size_t)h * (size_t)e->n_ctx + (size_t)(pos + t)) * e->kv_row;
            nb_cache_store(e->kv_type, e->k + ((size_t)t * KVH + h) * hd, hd, e->k_cache[L] + off);
            nb_cache_store(e->kv_type, e->v + ((size_t)t * KVH + h) * hd, hd, e->v_cache[L] + off);
        }
    attention(e, L, n, pos);
    NB_TRY(nb_eng_matmul(e, &l->wo, -1, e->att, n, e->xb2, ctx));
    add_bias(e->xb2, l->bo, n, hp->n_embd);
    return NB_OK;
}

static nb_status ffn_dense(nb_engine *e, const nb_layer *l, int n, nb_ctx *ctx) {
    const int64_t F = e->hp.n_ff;
    NB_TRY(nb_eng_matmul(e, &l->ffn_gate, -1, e->xb, n, e->hb, ctx));
    NB_TRY(nb_eng_matmul(e, &l->ffn_up, -1, e->xb, n, e->hb2, ctx));
    const nb_act act = e->hp.act;
#pragma omp parallel for num_threads(e->n_threads) schedule(static) if (n * F >= PAR_MIN)
    for (int t = 0; t < n; t++) nb_eng_glu(act, e->hb + t * F, e->hb2 + t * F, F);
    return nb_eng_matmul(e, &l->ffn_down, -1, e->hb, n, e->xb2, ctx);
}

static void add_rows(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

nb_status nb_engine_forward(nb_engine *e, const int32_t *tokens, int n, int pos, float *logits, nb_ctx *ctx) {
    const nb_ehparams *hp = &e->hp;
    const int E = hp->n_embd, nt = e->n_threads;
    for (int t = 0; t < n; t++) {
        NB_TRY(nb_get_row(e->tok_embd.type, e->tok_embd.data, E, tokens[t], e->x + (size_t)t * E, ctx));
        if (hp->embd_scale != 1.0f)
            for (int i = 0; i < E; i++) e->x[(size_t)t * E + i] *= hp->embd_scale;
    }
    rope_table(&e->rope_global, hp->n_rot, pos, n, e->rope_cs);
    if (hp->n_swa) rope_table(&e->rope_local, hp->n_rot, pos, n, e->rope_cs + (size_t)e->n_batch * hp->n_rot);
    for (int L = 0; L < hp->n_layer; L++) {
        const nb_layer *l = &e->layers[L];
        rmsnorm(e->xb, e->x, l->attn_norm, n, E, hp->rms_eps, nt);
        NB_TRY(attn_block(e, L, n, pos, ctx));
        if (l->post_attn_norm) rmsnorm(e->xb2, e->xb2, l->post_attn_norm, n, E, hp->rms_eps, nt);
        add_rows(e->x, e->xb2, (int64_t)n * E);
        rmsnorm(e->xb, e->x, l->ffn_norm, n, E, hp->rms_eps, nt);
        if (l->moe) NB_TRY(nb_engine_moe(e, L, e->xb, n, e->xb2, ctx));
        else NB_TRY(ffn_dense(e, l, n, ctx));
        if (l->post_ffw_norm) rmsnorm(e->xb2, e->xb2, l->post_ffw_norm, n, E, hp->rms_eps, nt);
        add_rows(e->x, e->xb2, (int64_t)n * E);
    }
    if (!logits && !e->hooks.on_matmul) return NB_OK;
    rmsnorm(e->xb, e->x, e->output_norm, n, E, hp->rms_eps, nt);
    if (!logits) { /* the hook still sees the output matmul's input; the product is not needed */
        e->hooks.on_matmul(e->hooks.user, e->output.name, -1, e->xb, n, e->output.n_in);
        return NB_OK;
    }
    return nb_eng_matmul(e, &e->output, -1, e->xb, n, logits, ctx);
}
