/* tests/engine/test_engine.c — the forward pass on synthetic models of every
 * architecture: logits finite and token-dependent, one batch == token by
 * token through the KV cache == uneven sub-batches, 1 vs 3 threads
 * bit-identical, GGUF and the same model as an HF directory give identical
 * logits, calibration hooks see every matmul (experts with only their routed
 * rows) and every routing decision; errors for a missing tensor, a wrong
 * shape, an unknown architecture, a missing key and bad eval arguments; and,
 * when the real models are cached, a plausible next token. (Agreement with
 * an independent implementation is tests/interop/test_engine_interop.py.) */
#include "core/fp.h"
#include "engine/engine.h"
#include "engine/engine_impl.h"
#include "quant/ggml_quants.h"
#include "formats/synth.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const k_archs[] = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma3"};
#define N_ARCH (sizeof k_archs / sizeof k_archs[0])
#define NTOK 7
static const int32_t k_toks[NTOK] = {1, 77, 200, 3, 255, 42, 77};

static nb_synth_opts opts_for(const char *arch) {
    nb_synth_opts o;
    nb_synth_opts_init(&o);
    o.arch = arch;
    o.seed = 5;
    o.n_layer = strcmp(arch, "gemma3") == 0 ? 6 : 2; /* gemma3: 5 local + 1 global layer */
    o.n_embd = 64;
    o.n_ff = 96;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_vocab = 256;
    o.dtype = NB_TYPE_F16; /* packed weights through nb_matmul's F16 path */
    if (strstr(arch, "moe") || !strcmp(arch, "mixtral")) {
        o.n_expert = 4;
        o.n_expert_used = 2;
    }
    return o;
}

static const char *synth(const char *arch, const char *suffix) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    char name[64];
    snprintf(name, sizeof name, "%s%s", arch, suffix);
    const char *p = nbt_path(name);
    if (!nbt_file_exists(p)) {
        nb_synth_opts o = opts_for(arch);
        ck_assert_msg(nb_synth_write(&o, p, &ctx) == NB_OK, "synth %s: %s", arch, nb_errmsg(&ctx));
    }
    nb_ctx_free(&ctx);
    return p;
}

static float *eval_all(const char *path, int threads, int batch, const int *split, nb_ctx *ctx) {
    nb_engine_opts o = {16, batch, threads, false, NB_CACHE_F32};
    nb_engine *e;
    ck_assert_msg(nb_engine_open(path, &o, &e, ctx) == NB_OK, "%s: %s", path, nb_errmsg(ctx));
    const int V = nb_engine_n_vocab(e);
    float *lg = malloc(sizeof(float) * NTOK * (size_t)V);
    ck_assert_ptr_nonnull(lg);
    int pos = 0;
    for (int k = 0; pos < NTOK; k++) {
        int n = split ? split[k] : NTOK;
        ck_assert_msg(nb_engine_eval(e, k_toks + pos, n, pos, lg + (size_t)pos * V, ctx) == NB_OK, "%s",
                      nb_errmsg(ctx));
        pos += n;
    }
    nb_engine_free(e);
    return lg;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (x > d) d = x;
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return m > 0 ? d / m : d;
}

START_TEST(test_every_arch) {
    const char *arch = k_archs[_i];
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = synth(arch, ".gguf");
    const size_t V = 256, N = (size_t)NTOK * V;
    float *batch = eval_all(p, 1, 0, NULL, &ctx);
    /* finite, and depends on the token: rows differ */
    for (size_t i = 0; i < N; i++) ck_assert_msg(isfinite(batch[i]), "%s: logit %zu not finite", arch, i);
    ck_assert_msg(rel_diff(batch, batch + V, V) > 1e-3, "%s: logits do not depend on the token", arch);
    /* the same token (77) at positions 1 and 6 sees different contexts */
    ck_assert_msg(rel_diff(batch + V, batch + 6 * V, V) > 1e-4, "%s: position/context has no effect", arch);

    static const int one[NTOK] = {1, 1, 1, 1, 1, 1, 1}, uneven[3] = {3, 1, 3};
    float *tok = eval_all(p, 1, 0, one, &ctx);
    float *unev = eval_all(p, 1, 2, uneven, &ctx); /* batch 2 splits the 3s again */
    for (int t = 0; t < NTOK; t++) {
        double d1 = rel_diff(tok + t * V, batch + t * V, V), d2 = rel_diff(unev + t * V, batch + t * V, V);
        ck_assert_msg(d1 <= 1e-5, "%s: token %d: token-by-token differs from batch by %g", arch, t, d1);
        ck_assert_msg(d2 <= 1e-5, "%s: token %d: sub-batches differ from batch by %g", arch, t, d2);
    }
    float *thr = eval_all(p, 3, 0, NULL, &ctx);
    ck_assert_msg(memcmp(thr, batch, N * sizeof(float)) == 0, "%s: 3 threads differ from 1 thread", arch);
    free(batch);
    free(tok);
    free(unev);
    free(thr);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- KV cache types ---------------------------------------------------------- */

/* nb_cache_attend against an independent double-precision computation of the
 * arithmetic each type promises (engine.h): F16 rounds q, K, V and the
 * attention weights to F16; Q8_0 quantizes q and K, V to Q8_0 blocks. */
START_TEST(test_cache_attend_reference) {
    enum { HD = 64, NP = 37 };
    uint64_t seed = 11;
    float q[HD], k[NP][HD], v[NP][HD];
    for (int d = 0; d < HD; d++) q[d] = nbt_rand_normal(&seed);
    for (int p = 0; p < NP; p++)
        for (int d = 0; d < HD; d++) {
            k[p][d] = nbt_rand_normal(&seed) * (p == 5 ? 3.f : 1.f);
            v[p][d] = nbt_rand_normal(&seed);
        }
    for (int t = NB_CACHE_F32; t <= NB_CACHE_Q8_0; t++) {
        const size_t row = nb_cache_row_bytes((nb_cache_type)t, HD);
        ck_assert_uint_eq(row, t == NB_CACHE_F32 ? 4 * HD : t == NB_CACHE_F16 ? 2 * HD : 2 * 34);
        unsigned char *K = malloc(NP * row), *V = malloc(NP * row);
        for (int p = 0; p < NP; p++) {
            nb_cache_store((nb_cache_type)t, k[p], HD, K + p * row);
            nb_cache_store((nb_cache_type)t, v[p], HD, V + p * row);
        }
        float sc[NP], tmp[NB_CACHE_TMP(HD)], out[HD];
        const int p0 = 3, p1 = NP - 1;
        nb_cache_attend((nb_cache_type)t, q, K, V, row, p0, p1, HD, sc, tmp, out);
        /* reference: the values each type's arithmetic sees, in double */
        double qr[HD], kr[NP][HD], vr[NP][HD], s[NP], mx = -INFINITY, sum = 0, o[HD] = {0};
        nb_block_q8_0 qb[HD / 32], kb[HD / 32];
        float deq[HD];
        if (t == NB_CACHE_Q8_0) {
            nb_quantize_q8_0(q, qb, 1, HD, NULL);
            nb_dequant_q8_0(qb, deq, HD);
        }
        for (int d = 0; d < HD; d++)
            qr[d] = t == NB_CACHE_F16 ? nb_f16_to_f32(nb_f32_to_f16(q[d])) : t == NB_CACHE_Q8_0 ? deq[d] : q[d];
        for (int p = p0; p <= p1; p++) {
            for (int pass = 0; pass < 2; pass++) {
                const float *src = pass ? v[p] : k[p];
                double *dst = pass ? vr[p] : kr[p];
                if (t == NB_CACHE_Q8_0) {
                    nb_quantize_q8_0(src, kb, 1, HD, NULL);
                    nb_dequant_q8_0(kb, deq, HD);
                }
                for (int d = 0; d < HD; d++)
                    dst[d] = t == NB_CACHE_F16 ? nb_f16_to_f32(nb_f32_to_f16(src[d])) : t == NB_CACHE_Q8_0 ? deq[d] : src[d];
            }
            s[p] = 0;
            for (int d = 0; d < HD; d++) s[p] += qr[d] * kr[p][d];
            if (s[p] > mx) mx = s[p];
        }
        for (int p = p0; p <= p1; p++) sum += exp(s[p] - mx);
        for (int p = p0; p <= p1; p++) {
            double w = exp(s[p] - mx) / sum;
            if (t == NB_CACHE_F16) w = nb_f16_to_f32(nb_f32_to_f16((float)w));
            for (int d = 0; d < HD; d++) o[d] += w * vr[p][d];
        }
        double err = 0, mag = 0, dflt = 0;
        for (int d = 0; d < HD; d++) {
            err = fmax(err, fabs(out[d] - o[d]));
            mag = fmax(mag, fabs(o[d]));
        }
        /* how far the F32 cache's answer is from this type's: the type must matter */
        float ref32[HD];
        unsigned char *K32 = malloc(NP * 4 * HD), *V32 = malloc(NP * 4 * HD);
        memcpy(K32, k, sizeof k);
        memcpy(V32, v, sizeof v);
        nb_cache_attend(NB_CACHE_F32, q, K32, V32, 4 * HD, p0, p1, HD, sc, tmp, ref32);
        for (int d = 0; d < HD; d++) dflt = fmax(dflt, fabs(ref32[d] - o[d]));
        ck_assert_msg(err <= 2e-6 * mag, "kv %s: %g from the reference (magnitude %g)",
                      nb_cache_type_name((nb_cache_type)t), err, mag);
        if (t != NB_CACHE_F32)
            ck_assert_msg(dflt > 20 * err, "kv %s: indistinguishable from F32 (%g vs %g)",
                          nb_cache_type_name((nb_cache_type)t), dflt, err);
        free(K), free(V), free(K32), free(V32);
    }
}
END_TEST

/* The tiled attention the engine runs equals the one-query path bit for bit:
 * every cache type, head sizes with and without an hd % 8 tail, tiles of 1
 * to NB_CACHE_TILE_Q queries (GQA heads x consecutive tokens) under causal,
 * sliding-window and bidirectional spans, starting late in the cache. */
static void spans_for(int mode, int pos, int n, int t, int *p0, int *p1) {
    const int w = 5, self = pos + t; /* window: 5 rows (bidir: 2 either side) */
    int a = 0, b = self;
    if (mode == 1 && self - w + 1 > 0) a = self - w + 1;
    if (mode >= 2) {
        b = pos + n - 1;
        if (mode == 3) {
            a = self - w / 2 > 0 ? self - w / 2 : 0;
            if (self + w / 2 < b) b = self + w / 2;
        }
    }
    *p0 = a;
    *p1 = b;
}

START_TEST(test_cache_attend_tile) {
    enum { NP = 61, HDMAX = 64 };
    static const int hds[] = {64, 36};
    uint64_t seed = 23;
    static float k[NP][HDMAX], v[NP][HDMAX], q[NB_CACHE_TILE_Q][HDMAX];
    for (int p = 0; p < NP; p++)
        for (int d = 0; d < HDMAX; d++) {
            k[p][d] = nbt_rand_normal(&seed) * (p % 7 == 3 ? 4.f : 1.f);
            v[p][d] = nbt_rand_normal(&seed);
        }
    for (int i = 0; i < NB_CACHE_TILE_Q; i++)
        for (int d = 0; d < HDMAX; d++) q[i][d] = nbt_rand_normal(&seed);
    static const int shapes[][2] = {{1, 1}, {4, 1}, {1, 16}, {4, 4}, {3, 5}, {16, 1}, {2, 3}}; /* heads x tokens */
    int compared = 0;
    for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++)
        for (int t = NB_CACHE_F32; t <= NB_CACHE_Q8_0; t++) {
            const int hd = hds[hi];
            if (t == NB_CACHE_Q8_0 && hd % 32) continue;
            const size_t row = nb_cache_row_bytes((nb_cache_type)t, hd);
            unsigned char *K = malloc(NP * row), *V = malloc(NP * row);
            for (int p = 0; p < NP; p++) {
                nb_cache_store((nb_cache_type)t, k[p], hd, K + p * row);
                nb_cache_store((nb_cache_type)t, v[p], hd, V + p * row);
            }
            float *sc = malloc(sizeof(float) * NB_CACHE_TILE_Q * NP);
            float *tmp = malloc(sizeof(float) * NB_CACHE_TILE_TMP(hd));
            float sc1[NP], tmp1[NB_CACHE_TMP(HDMAX)], ref[HDMAX], got[NB_CACHE_TILE_Q][HDMAX];
            for (int mode = 0; mode < 4; mode++)
                for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
                    const int G = shapes[si][0], T = shapes[si][1], n = T + 3, pos = NP - n;
                    for (int t0 = 0; t0 + T <= n; t0 += 3) { /* a tile at the batch's start, middle, end */
                        const float *qs[NB_CACHE_TILE_Q];
                        float *outs[NB_CACHE_TILE_Q];
                        int p0[NB_CACHE_TILE_Q], p1[NB_CACHE_TILE_Q], nq = 0;
                        for (int tt = 0; tt < T; tt++)
                            for (int g = 0; g < G; g++, nq++) {
                                spans_for(mode, pos, n, t0 + tt, &p0[nq], &p1[nq]);
                                qs[nq] = q[nq];
                                outs[nq] = got[nq];
                            }
                        nb_cache_attend_tile((nb_cache_type)t, nq, qs, p0, p1, K, V, row, hd, sc, NP, tmp, outs);
                        for (int i = 0; i < nq; i++) {
                            nb_cache_attend((nb_cache_type)t, q[i], K, V, row, p0[i], p1[i], hd, sc1, tmp1, ref);
                            ck_assert_msg(memcmp(ref, got[i], (size_t)hd * sizeof(float)) == 0,
                                          "kv %s hd %d mask %d tile %dx%d query %d: differs from the one-query path",
                                          nb_cache_type_name((nb_cache_type)t), hd, mode, G, T, i);
                            compared++;
                        }
                    }
                }
            free(K), free(V), free(sc), free(tmp);
        }
    ck_assert_int_gt(compared, 1000);
}
END_TEST

/* A gemma3 model with 4 query heads on one KV head and a 3-row sliding
 * window, under each cache type: a 160-token batch at 1 and 2 threads and the
 * same tokens one at a time give the same logits bit for bit (tiles of many
 * tokens against tiles of one). 160 tokens of head size 64 are enough work
 * (160 * 4 * 160 * 64 > 2^22 multiply-adds) for attention and the matmuls
 * to take both threads. */
START_TEST(test_attention_tiles_engine) {
    enum { N = 160 };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("tiles.gguf");
    nb_synth_opts so = opts_for("gemma3");
    so.n_embd = 256;
    so.n_head = 4;
    so.n_head_kv = 1; /* head size 64, G = 4 */
    so.sliding_window = 3;
    ck_assert_msg(nb_synth_write(&so, p, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = (int32_t)((i * 37 + 11) % 256);
    const size_t V = 256;
    for (int t = NB_CACHE_F32; t <= NB_CACHE_Q8_0; t++) {
        float *lg[3];
        for (int run = 0; run < 3; run++) {
            nb_engine_opts o = {N, 0, run == 1 ? 2 : 1, false, (nb_cache_type)t};
            nb_engine *e;
            ck_assert_msg(nb_engine_open(p, &o, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
            lg[run] = malloc(N * V * sizeof(float));
            if (run < 2)
                ck_assert_int_eq(nb_engine_eval(e, toks, N, 0, lg[run], &ctx), NB_OK);
            else
                for (int i = 0; i < N; i++)
                    ck_assert_int_eq(nb_engine_eval(e, toks + i, 1, i, lg[run] + i * V, &ctx), NB_OK);
            nb_engine_free(e);
        }
        const char *n = nb_cache_type_name((nb_cache_type)t);
        ck_assert_msg(memcmp(lg[0], lg[1], N * V * sizeof(float)) == 0, "kv %s: 2 threads differ from 1", n);
        ck_assert_msg(memcmp(lg[0], lg[2], N * V * sizeof(float)) == 0, "kv %s: token by token differs", n);
        for (int run = 0; run < 3; run++) free(lg[run]);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* A model with a head size of 32 under each cache type: close to the F32
 * cache and not equal to it, the same at any thread count and batching; a
 * head size that Q8_0 cannot block is refused by name. */
START_TEST(test_kv_types_engine) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    const char *p = nbt_path("kv32.gguf");
    nb_synth_opts so = opts_for("gemma3");
    so.n_head = 2;
    so.n_head_kv = 1; /* head size 64 / 2 = 32 */
    ck_assert_msg(nb_synth_write(&so, p, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
    const size_t V = 256, N = (size_t)NTOK * V;
    float *lg[3][2];
    for (int t = NB_CACHE_F32; t <= NB_CACHE_Q8_0; t++)
        for (int th = 0; th < 2; th++) {
            nb_engine_opts o = {16, th ? 2 : 0, th ? 3 : 1, false, (nb_cache_type)t};
            nb_engine *e;
            ck_assert_msg(nb_engine_open(p, &o, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
            lg[t][th] = malloc(N * sizeof(float));
            ck_assert_int_eq(nb_engine_eval(e, k_toks, NTOK, 0, lg[t][th], &ctx), NB_OK);
            nb_engine_free(e);
        }
    for (int t = NB_CACHE_F32; t <= NB_CACHE_Q8_0; t++) {
        const char *n = nb_cache_type_name((nb_cache_type)t);
        /* 3 threads in sub-batches of 2: bit-identical */
        ck_assert_msg(memcmp(lg[t][0], lg[t][1], N * sizeof(float)) == 0, "kv %s: threads/batching change logits", n);
        for (size_t i = 0; i < N; i++) ck_assert_msg(isfinite(lg[t][0][i]), "kv %s: logit %zu", n, i);
        if (t == NB_CACHE_F32) continue;
        double d = rel_diff(lg[t][0], lg[NB_CACHE_F32][0], N);
        ck_assert_msg(d > 0 && d < (t == NB_CACHE_F16 ? 5e-3 : 5e-2), "kv %s: %g from the F32 cache", n, d);
    }
    for (int t = 0; t < 3; t++) free(lg[t][0]), free(lg[t][1]);

    const char *p16 = synth("llama", ".gguf"); /* head size 16 */
    nb_engine_opts o = {16, 0, 1, false, NB_CACHE_Q8_0};
    nb_engine *e = NULL;
    ck_assert_int_eq(nb_engine_open(p16, &o, &e, &ctx), NB_ERR_INVALID);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "multiple of 32") && strstr(nb_errmsg(&ctx), "16"), "%s", nb_errmsg(&ctx));
    o.kv_type = (nb_cache_type)7;
    ck_assert_int_eq(nb_engine_open(p16, &o, &e, &ctx), NB_ERR_INVALID);
    nb_cache_type ct;
    ck_assert(nb_cache_type_from_name("q8_0", &ct) && ct == NB_CACHE_Q8_0);
    ck_assert(!nb_cache_type_from_name("q4_0", &ct));
    nb_ctx_free(&ctx);
}
END_TEST

/* The same model as an HF directory (q/k rows permuted on read, experts
 * stacked, Gemma norms shifted) gives exactly the GGUF's logits. */
START_TEST(test_hf_dir_equals_gguf) {
    static const char *const archs[] = {"llama", "qwen2moe", "mixtral", "gemma3"};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        float *g = eval_all(synth(archs[a], ".gguf"), 1, 0, NULL, &ctx);
        float *h = eval_all(synth(archs[a], "_hf"), 1, 0, NULL, &ctx);
        ck_assert_msg(memcmp(g, h, sizeof(float) * NTOK * 256) == 0, "%s: HF dir logits differ from GGUF (%g)",
                      archs[a], rel_diff(h, g, (size_t)NTOK * 256));
        free(g);
        free(h);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- hooks ------------------------------------------------------------------------- */

typedef struct hook_log {
    int n_matmul, n_route, n_expert_calls;
    int64_t dense_rows_bad;     /* dense matmuls whose row count was not the batch size */
    int64_t expert_rows[2][3];  /* per layer: rows seen by gate/up/down _exps, summed over experts */
    int64_t routed[2][8];       /* per layer, per expert: tokens routed (from on_route) */
    int64_t hooked[2][8];       /* per layer, per expert: rows given to ffn_gate_exps */
    bool saw_output, bad_route, weights_not_normalised;
    int n_tok;
    bool norm;
} hook_log;

static void on_mm(void *user, const char *name, int expert, const float *x, int64_t n_tok, int64_t n_in) {
    hook_log *h = user;
    h->n_matmul++;
    ck_assert_ptr_nonnull(x);
    ck_assert(n_in > 0);
    for (int64_t i = 0; i < n_tok * n_in; i++) ck_assert(isfinite(x[i]));
    int L = -1;
    sscanf(name, "blk.%d.", &L);
    if (strstr(name, "_exps")) {
        ck_assert(expert >= 0 && expert < 8 && L >= 0 && L < 2);
        int k = strstr(name, "gate_exps") ? 0 : strstr(name, "up_exps") ? 1 : 2;
        h->expert_rows[L][k] += n_tok;
        if (k == 0) h->hooked[L][expert] += n_tok;
        h->n_expert_calls++;
    } else {
        ck_assert_int_eq(expert, -1);
        if (n_tok != h->n_tok) h->dense_rows_bad++;
    }
    if (!strcmp(name, "output.weight") || !strcmp(name, "token_embd.weight")) h->saw_output = true;
}

static void on_rt(void *user, int layer, const int32_t *ex, const float *w, int64_t n_tok, int n_used,
                  int n_expert) {
    hook_log *h = user;
    h->n_route++;
    if (layer < 0 || layer > 1 || n_tok != h->n_tok || n_expert > 8) { h->bad_route = true; return; }
    for (int64_t t = 0; t < n_tok; t++) {
        double s = 0;
        for (int k = 0; k < n_used; k++) {
            int32_t e = ex[t * n_used + k];
            if (e < 0 || e >= n_expert || !(w[t * n_used + k] > 0)) h->bad_route = true;
            for (int j = 0; j < k; j++) if (ex[t * n_used + j] == e) h->bad_route = true;
            /* descending weights */
            if (k && w[t * n_used + k] > w[t * n_used + k - 1]) h->bad_route = true;
            if (e >= 0 && e < 8) h->routed[layer][e]++;
            s += w[t * n_used + k];
        }
        if (h->norm && fabs(s - 1.0) > 1e-5) h->weights_not_normalised = true;
        if (!h->norm && !(s < 1.0)) h->weights_not_normalised = true; /* softmax mass of 2 of 4 experts */
    }
}

START_TEST(test_hooks) {
    static const char *const archs[] = {"qwen2moe", "qwen3moe", "llama"};
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t a = 0; a < 3; a++) {
        const bool moe = a < 2;
        nb_engine_opts o = {16, 0, 2, false, NB_CACHE_F32};
        nb_engine *e;
        ck_assert(nb_engine_open(synth(archs[a], ".gguf"), &o, &e, &ctx) == NB_OK);
        hook_log h;
        memset(&h, 0, sizeof h);
        h.n_tok = NTOK;
        h.norm = a == 1; /* qwen3moe renormalises, qwen2moe does not */
        nb_engine_hooks hk = {on_mm, on_rt, &h};
        nb_engine_set_hooks(e, &hk);
        float *lg = malloc(sizeof(float) * NTOK * 256);
        ck_assert(nb_engine_eval(e, k_toks, NTOK, 0, lg, &ctx) == NB_OK);
        ck_assert_int_eq(h.dense_rows_bad, 0);
        ck_assert(h.saw_output);
        if (moe) {
            /* per layer: q k v o + router (+ qwen2moe: shared gate, gate, up, down) + output */
            int dense = 2 * (5 + (a == 0 ? 4 : 0)) + 1;
            ck_assert_int_eq(h.n_matmul - h.n_expert_calls, dense);
            ck_assert_int_eq(h.n_route, 2);
            ck_assert(!h.bad_route);
            ck_assert_msg(!h.weights_not_normalised, "%s: expert weights normalisation", archs[a]);
            for (int L = 0; L < 2; L++) {
                for (int k = 0; k < 3; k++) ck_assert_int_eq(h.expert_rows[L][k], NTOK * 2);
                for (int x = 0; x < 4; x++) ck_assert_int_eq(h.hooked[L][x], h.routed[L][x]);
            }
        } else {
            ck_assert_int_eq(h.n_matmul, 2 * 7 + 1);
            ck_assert_int_eq(h.n_route, 0);
        }
        /* hooks do not change results; clearing them stops the calls */
        float *lg2 = malloc(sizeof(float) * NTOK * 256);
        nb_engine_set_hooks(e, NULL);
        int before = h.n_matmul;
        nb_engine_reset(e);
        ck_assert(nb_engine_eval(e, k_toks, NTOK, 0, lg2, &ctx) == NB_OK);
        ck_assert_int_eq(h.n_matmul, before);
        ck_assert(memcmp(lg, lg2, sizeof(float) * NTOK * 256) == 0);
        /* logits NULL: the output matmul's input is still hooked */
        nb_engine_set_hooks(e, &hk);
        h.saw_output = false;
        nb_engine_reset(e);
        ck_assert(nb_engine_eval(e, k_toks, NTOK, 0, NULL, &ctx) == NB_OK);
        ck_assert(h.saw_output);
        free(lg);
        free(lg2);
        nb_engine_free(e);
    }
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- errors -------------------------------------------------------------------------- */

static nb_model *open_model(const char *arch) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_model *m;
    ck_assert(nb_model_open(synth(arch, ".gguf"), &m, &ctx) == NB_OK);
    nb_ctx_free(&ctx);
    return m;
}

static nb_tensor *find_mut(nb_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

/* GeGLU's GELU (own exp, no libm) and SwiGLU's SiLU: within 3e-6 / 1e-6 of
 * the formulas in double (relative, or absolute near 0), exact at 0 and the
 * infinities, NaN stays NaN, and the gate/up product applied. */
START_TEST(test_gelu) {
    enum { N = 54721 };
    float *g = malloc(N * sizeof(float)), *up = malloc(N * sizeof(float));
    ck_assert(g && up);
    for (int i = 0; i < N; i++) {
        g[i] = -20.f + 40.f * (float)i / (float)(N - 1);
        up[i] = i % 3 ? 1.f : 2.f;
    }
    nb_eng_glu(NB_ACT_GELU_TANH, g, up, N);
    for (int i = 0; i < N; i++) {
        const float xf = -20.f + 40.f * (float)i / (float)(N - 1);
        const double u = 0.7978845608028654 * xf * (1 + 0.044715 * (double)xf * xf);
        const double ref = 0.5 * xf * (1 + tanh(u)) * up[i];
        const double err = fabs(g[i] - ref);
        ck_assert_msg(err <= 3e-6 * fmax(fabs(ref), 1.0 / 3), "gelu(%.9g) = %.9g, want %.9g", (double)xf,
                      (double)g[i], ref);
    }
    float sp[5] = {0.f, INFINITY, -INFINITY, NAN, 9.9f}, one[5] = {1, 1, 1, 1, 1};
    nb_eng_glu(NB_ACT_GELU_TANH, sp, one, 5);
    ck_assert(sp[0] == 0.f && sp[1] == INFINITY && sp[2] == -INFINITY && isnan(sp[3]) && sp[4] == 9.9f);
    /* SiLU: x / (1 + e^-x) from -100 to 100 */
    for (int i = 0; i < N; i++) g[i] = -100.f + 200.f * (float)i / (float)(N - 1);
    nb_eng_glu(NB_ACT_SILU, g, up, N);
    for (int i = 0; i < N; i++) {
        const float xf = -100.f + 200.f * (float)i / (float)(N - 1);
        const double ref = xf / (1 + exp(-(double)xf)) * up[i];
        ck_assert_msg(fabs(g[i] - ref) <= 1e-6 * fmax(fabs(ref), 1.0 / 3), "silu(%.9g) = %.9g, want %.9g",
                      (double)xf, (double)g[i], ref);
    }
    float sq[4] = {0.f, INFINITY, NAN, 100.f};
    nb_eng_glu(NB_ACT_SILU, sq, one, 4);
    ck_assert(sq[0] == 0.f && sq[1] == INFINITY && isnan(sq[2]) && sq[3] == 100.f);
    free(g);
    free(up);
}
END_TEST

START_TEST(test_errors) {
    nb_ctx ctx;
    nbt_ctx(&ctx);
    nb_engine *e = NULL;
    /* missing tensor (renamed away) */
    nb_model *m = open_model("qwen2");
    strcpy(find_mut(m, "blk.1.attn_k.bias")->name, "blk.1.attn_k.bixs");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "missing tensor 'blk.1.attn_k.bias'"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    /* an expert stack missing */
    m = open_model("mixtral");
    strcpy(find_mut(m, "blk.0.ffn_down_exps.weight")->name, "blk.0.ffn_dowx_exps.weight");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "'blk.0.ffn_down_exps.weight'"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    /* wrong shape: both shapes in the message */
    m = open_model("llama");
    nb_tensor *t = find_mut(m, "blk.0.attn_v.weight");
    t->ne[1] = 48;
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "'blk.0.attn_v.weight'") && strstr(nb_errmsg(&ctx), "[64, 48]") &&
                      strstr(nb_errmsg(&ctx), "[64, 32]"),
                  "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    /* gemma3 needs its sandwich norms */
    m = open_model("gemma3");
    strcpy(find_mut(m, "blk.2.post_ffw_norm.weight")->name, "blk.2.post_ffw_norx.weight");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "'blk.2.post_ffw_norm.weight'"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    /* unknown architecture: refused with the supported list */
    m = open_model("llama");
    ck_assert(nb_kv_set_str(&m->kv, "general.architecture", "phi3", &ctx) == NB_OK);
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "'phi3'") && strstr(nb_errmsg(&ctx), "qwen3moe") &&
                      strstr(nb_errmsg(&ctx), "gemma3"),
                  "%s", nb_errmsg(&ctx));
    nb_kv_remove(&m->kv, "general.architecture");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    nb_model_close(m);
    /* missing key */
    m = open_model("qwen3");
    nb_kv_remove(&m->kv, "qwen3.block_count");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "qwen3.block_count"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    m = open_model("gemma3");
    nb_kv_remove(&m->kv, "gemma3.attention.sliding_window");
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "gemma3.attention.sliding_window"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);
    /* heads that do not divide */
    m = open_model("llama");
    ck_assert(nb_kv_set_u32(&m->kv, "llama.attention.head_count_kv", 3, &ctx) == NB_OK);
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_FORMAT);
    nb_model_close(m);

    /* more routed experts than the engine accepts (64) */
    m = open_model("mixtral");
    ck_assert(nb_kv_set_u32(&m->kv, "llama.expert_count", 100, &ctx) == NB_OK);
    ck_assert(nb_kv_set_u32(&m->kv, "llama.expert_used_count", 65, &ctx) == NB_OK);
    ck_assert_int_eq(nb_engine_open_model(m, NULL, &e, &ctx), NB_ERR_RANGE);
    ck_assert_msg(strstr(nb_errmsg(&ctx), "llama.expert_used_count"), "%s", nb_errmsg(&ctx));
    nb_model_close(m);

    /* eval arguments */
    nb_engine_opts o = {8, 0, 1, false, NB_CACHE_F32};
    ck_assert(nb_engine_open(synth("llama", ".gguf"), &o, &e, &ctx) == NB_OK);
    ck_assert_int_eq(nb_engine_n_ctx(e), 8);
    int32_t bad = 256;
    ck_assert_int_eq(nb_engine_eval(e, &bad, 1, 0, NULL, &ctx), NB_ERR_RANGE);
    bad = -1;
    ck_assert_int_eq(nb_engine_eval(e, &bad, 1, 0, NULL, &ctx), NB_ERR_RANGE);
    ck_assert_int_eq(nb_engine_eval(e, k_toks, 7, 2, NULL, &ctx), NB_ERR_INVALID); /* pos past the cache */
    ck_assert_int_eq(nb_engine_eval(e, k_toks, 7, 0, NULL, &ctx), NB_OK);
    ck_assert_int_eq(nb_engine_eval(e, k_toks, 2, 7, NULL, &ctx), NB_ERR_RANGE); /* 9 > n_ctx 8 */
    ck_assert_int_eq(nb_engine_eval(e, k_toks, 1, 7, NULL, &ctx), NB_OK);
    nb_engine_free(e);
    nb_engine_free(NULL);
    nb_ctx_free(&ctx);
}
END_TEST

/* ---- real models (skipped when not cached) ----------------------------------------------- */

static const char *cached(const char *file) {
    static char buf[4096];
    const char *dir = getenv("NIBBLE_MODELS");
    if (dir && *dir) snprintf(buf, sizeof buf, "%s/%s", dir, file);
    else if (getenv("HOME")) snprintf(buf, sizeof buf, "%s/.cache/nibble/models/%s", getenv("HOME"), file);
    else return NULL;
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static int rank_of(const float *l, int V, int id) {
    int r = 0;
    for (int i = 0; i < V; i++) r += l[i] > l[id];
    return r;
}

START_TEST(test_real_models) {
    /* "The capital of France is" with ids from each model's vocabulary; the
     * next token " Paris" must rank first (SmolLM2) / in the top 5 (Gemma 3
     * 270M, which also likes " the" and " a" here). */
    static const struct { const char *file; int32_t ids[6]; int n; int32_t paris; int max_rank; } k[] = {
        {"SmolLM2-135M-Instruct.Q4_1.gguf", {504, 3575, 282, 4649, 314}, 5, 7042, 0},
        {"gemma-3-270m-Q4_K_M.gguf", {2, 818, 5279, 529, 7001, 563}, 6, 9079, 4},
    };
    nb_ctx ctx;
    nbt_ctx(&ctx);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const char *p = cached(k[i].file);
        if (!p) {
            printf("SKIP real model %s: not cached (scripts/fetch-models)\n", k[i].file);
            continue;
        }
        nb_engine_opts o = {16, 0, 2, false, NB_CACHE_F32};
        nb_engine *e;
        ck_assert_msg(nb_engine_open(p, &o, &e, &ctx) == NB_OK, "%s", nb_errmsg(&ctx));
        const int V = nb_engine_n_vocab(e);
        float *l = malloc(sizeof(float) * (size_t)V);
        ck_assert(nb_engine_eval(e, k[i].ids, k[i].n - 1, 0, NULL, &ctx) == NB_OK);
        ck_assert(nb_engine_eval(e, k[i].ids + k[i].n - 1, 1, k[i].n - 1, l, &ctx) == NB_OK);
        for (int j = 0; j < V; j++) ck_assert(isfinite(l[j]));
        int r = rank_of(l, V, k[i].paris);
        ck_assert_msg(r <= k[i].max_rank, "%s: ' Paris' ranks %d", k[i].file, r);
        free(l);
        nb_engine_free(e);
    }
    nb_ctx_free(&ctx);
}
END_TEST

static Suite *engine_suite(void) {
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("engine");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_every_arch, 0, (int)N_ARCH);
    tcase_add_test(tc, test_hf_dir_equals_gguf);
    tcase_add_test(tc, test_hooks);
    tcase_add_test(tc, test_cache_attend_reference);
    tcase_add_test(tc, test_cache_attend_tile);
    tcase_add_test(tc, test_attention_tiles_engine);
    tcase_add_test(tc, test_kv_types_engine);
    tcase_add_test(tc, test_gelu);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_real_models);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(engine_suite());
    srunner_set_fork_status(sr, CK_NOFORK); /* synthetic models are written once per process */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
